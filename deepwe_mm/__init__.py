"""deepwe_mm package."""
