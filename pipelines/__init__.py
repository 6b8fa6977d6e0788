"""The only package that knows all the others: cohorts on disk, datasets, training, prediction,
model bundles, dataset importers, synthetic cohorts and the ``deepwe`` command line.

``pipelines.load_bundle(path)`` loads a verified model bundle (for notebooks); heavy modules load on
first use so that ``deepwe --help`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_bundle": "pipelines.loading",
    "Bundle": "pipelines.loading",
    "train": "pipelines.train",
    "TrainConfig": "pipelines.train_config",
    "validate_cohort": "pipelines.validate",
    "load_cohort": "pipelines.cohort",
    "generate_cohort": "pipelines.synth",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
