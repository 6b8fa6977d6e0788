"""Fixtures for pipeline tests: one small synthetic cohort per session, copied when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.synth import generate_cohort


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 31-patient synthetic cohort (read-only: copy it with ``editable_cohort`` to change it)."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(out, n=31, seed=7, missing_rate=0.3)
    return out


@pytest.fixture
def editable_cohort(synth_cohort: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic cohort, inside ``tmp_path/data``."""
    target = tmp_path / "data"
    shutil.copytree(synth_cohort, target)
    return target
