"""What the dashboard serves: the model bundle, the cohort and optional precomputed predictions.

``deepwe dashboard`` passes them after ``--`` on the ``streamlit run`` command line; a deployment that
runs ``streamlit run app/dashboard.py`` itself may set ``DEEPWE_MODEL``, ``DEEPWE_COHORT`` and
``DEEPWE_PREDICTIONS`` instead. Command-line values win.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_MODEL, ENV_COHORT, ENV_PREDICTIONS = "DEEPWE_MODEL", "DEEPWE_COHORT", "DEEPWE_PREDICTIONS"
USAGE = "deepwe dashboard MODEL_DIR COHORT.yaml [--predictions predictions.parquet]"


class SettingsError(ValueError):
    """The dashboard was started without a model or a cohort; the message says how to start it."""


@dataclass(frozen=True)
class DashboardSettings:
    """Paths the dashboard serves (absolute).

    Attributes:
        model: the model bundle folder.
        cohort: the cohort spec (YAML).
        predictions: a ``deepwe predict`` output for that cohort and model; None computes them once
            per server.
    """

    model: Path
    cohort: Path
    predictions: Path | None = None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    parser.add_argument("--cohort")
    parser.add_argument("--predictions")
    return parser


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> DashboardSettings:
    """Read the settings from script arguments (``--model``, ``--cohort``, ``--predictions``) or the
    environment.

    Raises:
        SettingsError: the model or the cohort is not given.
    """
    given, _ = _parser().parse_known_args(list(argv))
    model = given.model or environ.get(ENV_MODEL)
    cohort = given.cohort or environ.get(ENV_COHORT)
    predictions = given.predictions or environ.get(ENV_PREDICTIONS) or None
    if not model or not cohort:
        raise SettingsError(
            f"the dashboard needs a model bundle and a cohort spec; start it with `{USAGE}` "
            f"(or set {ENV_MODEL} and {ENV_COHORT})"
        )
    return DashboardSettings(
        model=Path(model).expanduser().resolve(),
        cohort=Path(cohort).expanduser().resolve(),
        predictions=Path(predictions).expanduser().resolve() if predictions else None,
    )
