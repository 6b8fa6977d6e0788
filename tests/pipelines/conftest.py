"""Fixtures for pipeline tests: one small synthetic cohort per session, copied when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.sources.synth import generate_cohort
from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = TrainConfig.from_yaml(REPO / "configs" / "tiny.yaml")


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


@pytest.fixture(scope="session")
def cohort_60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-patient synthetic cohort with a quarter of the modalities missing (read-only)."""
    folder = tmp_path_factory.mktemp("train") / "cohort"
    generate_cohort(folder, n=60, seed=21, missing_rate=0.25)
    return folder / "cohort.yaml"


@pytest.fixture(scope="session")
def bundle_path(cohort_60: Path) -> Path:
    """A model bundle trained on ``cohort_60`` with configs/tiny.yaml (read-only)."""
    out = cohort_60.parent.parent / "model"
    train(cohort_60, out, TINY, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(bundle_path: Path):
    """``bundle_path`` loaded (once per test module)."""
    from pipelines.api import load_bundle

    return load_bundle(bundle_path)


@pytest.fixture
def cohort_copy(cohort_60: Path, tmp_path: Path) -> Path:
    """A private copy of ``cohort_60``'s folder, to edit."""
    target = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, target)
    return target
