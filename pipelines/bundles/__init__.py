"""Model bundles on disk: writing, verifying and loading them, rebuilding their model, their model card."""
