"""The only package that knows all the others: cohorts, datasets, training, prediction, model
bundles, dataset importers, synthetic cohorts and the ``deepwe`` command line.

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
import sys
import types
from typing import Any

_LAZY = {
    "Cohort": "pipelines.cohort",
    "load_cohort": "pipelines.cohort",
    "train": "pipelines.api",
    "load_bundle": "pipelines.loading",
    "Bundle": "pipelines.loading",
    "TrainConfig": "pipelines.train_config",
    "validate_cohort": "pipelines.validate",
    "generate_cohort": "pipelines.synth",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """``pipelines`` itself: its API names stay the API's when a submodule of the same name loads.

    Importing ``pipelines.train`` would otherwise bind the module over ``pipelines.train``, the
    function; the module stays reachable as ``from pipelines.train import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
