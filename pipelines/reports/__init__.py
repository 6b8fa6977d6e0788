"""The audit report of a bundle on a cohort (HTML and PDF)."""
