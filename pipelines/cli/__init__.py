"""The ``deepwe`` command line (``python -m pipelines.cli`` runs it too).

Each ``*_commands`` module registers its commands on the one typer app of
:mod:`pipelines.cli.typer_app`. Importing them here registers them, and their order is the order of
``deepwe --help``: data in, training, prediction, judging a model, running and shipping it.
"""

# isort: off
from pipelines.cli import data_commands, training_commands, predict_commands  # noqa: F401
from pipelines.cli import analysis_commands, ops_commands  # noqa: F401

# isort: on
from pipelines.cli.typer_app import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, app, main

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "app", "main"]
