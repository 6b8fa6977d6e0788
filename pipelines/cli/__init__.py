"""The ``deepwe`` command line (``python -m pipelines.cli`` runs it too)."""

from pipelines.cli.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, app, main

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "app", "main"]
