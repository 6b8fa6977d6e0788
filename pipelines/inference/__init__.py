"""Batch prediction with a bundle: resumable runs, shards, the Ray engine, DataFrame and MLflow serving."""
