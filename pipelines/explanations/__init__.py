"""Per-patient explanations: attributions, Shapley values and weights, their files and pictures."""
