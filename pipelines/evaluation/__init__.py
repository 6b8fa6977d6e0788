"""Scoring predictions: metrics with confidence intervals, per-subgroup evaluation, out-of-distribution scores."""
