"""The script of an exported MLflow model ("models from code"): MLflow runs it to build the model,
so nothing is unpickled. ``deepwe export mlflow`` copies it into the export."""

import mlflow

from pipelines.inference.mlflow_export import DeepWeModel

mlflow.models.set_model(DeepWeModel())
