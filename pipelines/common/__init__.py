"""Low-level helpers every stage may use: compute devices, worker and thread counts, JSON-safe values."""
