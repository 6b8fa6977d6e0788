"""Where the benchmarks read and write: the shared data, their scratch folders, their training
configs and their results. Every path a benchmark uses starts here.

Results of a part live in ``benchmarks/results/{quick,full}/<part>/``; the suite writes
``results.json`` there, ``{"rows": [...], "run": {...}}`` (rows as in :mod:`benchmarks.rows`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipelines.training.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPWE_SHARED_DATA", REPO.parent / "shared" / "data"))
"""The real datasets (``../shared/data`` unless ``DEEPWE_SHARED_DATA`` says otherwise)."""
WORK = REPO / "runs" / "bench"
"""Scratch: imports, cohorts, models (git-ignored)."""
CONFIGS = REPO / "configs" / "bench"
"""Training settings of the benchmark parts, one YAML file per setting."""
RESULTS = REPO / "benchmarks" / "results"


def results_folder(part: str, quick: bool) -> Path:
    """``benchmarks/results/{quick,full}/<part>/``."""
    return RESULTS / ("quick" if quick else "full") / part


def results_path(part: str, quick: bool, name: str = "results.json") -> Path:
    """A result file of ``part`` (``results.json`` unless named)."""
    return results_folder(part, quick) / name


def bench_config(name: str, **overrides: Any) -> TrainConfig:
    """The training settings ``configs/bench/<name>.yaml`` with ``overrides`` on top (None: keep).

    Raises:
        ValueError: no such file, or a key :class:`TrainConfig` does not know.
    """
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise ValueError(f"no benchmark config {name!r} in {CONFIGS}; known: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data |= {key: value for key, value in overrides.items() if value is not None}
    return TrainConfig.from_dict(data, source=str(path))
