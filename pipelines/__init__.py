"""The only package that knows all the others, in stage sub-packages: ``cohorts``, ``sources``,
``evaluation``, ``bundles``, ``training``, ``inference``, ``audit``, ``explanations``, ``reports``
and the ``deepwe`` command line in ``cli`` (see docs/development.md for the layers).

The Python API (see :mod:`pipelines.api`)::

    from pipelines import Cohort, load_bundle, load_cohort, train

    cohort = Cohort.from_frame(frame, spec, root="data")   # or load_cohort("cohort.yaml")
    bundle = train(cohort.split(seed=1), "configs/tiny.yaml")
    bundle.predict_proba(cohort)                           # (N, C) DataFrame, index = patient id
    bundle.evaluate(cohort)
    bundle.explain(cohort, "P-0001")
    load_bundle(bundle.path)                               # verified again, from disk

Heavy modules load on first use so that ``deepwe --help`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Cohort": "pipelines.cohorts.cohort_table",
    "load_cohort": "pipelines.cohorts.cohort_table",
    "train": "pipelines.api",
    "load_bundle": "pipelines.api",
    "Bundle": "pipelines.bundles.loading",
    "TrainConfig": "pipelines.training.train_config",
    "validate_cohort": "pipelines.cohorts.validate",
    "generate_cohort": "pipelines.sources.synth",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
