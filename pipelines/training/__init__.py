"""Training a cohort into a bundle: settings, the training loop, checkpoints, hyperparameter search."""
