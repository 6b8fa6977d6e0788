"""Fixtures for the dashboard tests: one tiny trained bundle, its cohort and its predictions per session.

The cohort and the bundle are built like tests/pipelines' (the synthetic generator, configs/tiny.yaml),
with one epoch: the dashboard needs a real model, not a good one.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import predict_cohort
from pipelines.sources.synth import generate_cohort
from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "app" / "dashboard.py"
TINY = dataclasses.replace(TrainConfig.from_yaml(REPO / "configs" / "tiny.yaml"), epochs=1)


@pytest.fixture(scope="session")
def dashboard_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec of a 31-patient synthetic cohort with a third of the modalities missing (read-only)."""
    folder = tmp_path_factory.mktemp("dashboard") / "cohort"
    return generate_cohort(folder, n=31, seed=7, missing_rate=0.3).spec_path


@pytest.fixture(scope="session")
def dashboard_model(dashboard_cohort: Path) -> Path:
    """A bundle trained for one epoch on ``dashboard_cohort`` (read-only)."""
    out = dashboard_cohort.parent.parent / "model"
    train(dashboard_cohort, out, TINY, device="cpu", progress=False)
    return out


@pytest.fixture(scope="session")
def dashboard_bundle(dashboard_model: Path) -> Bundle:
    return load_bundle(dashboard_model)


@pytest.fixture(scope="session")
def dashboard_predictions(dashboard_bundle: Bundle, dashboard_cohort: Path) -> Path:
    """``deepwe predict`` output for the whole cohort (parquet)."""
    out = dashboard_cohort.parent.parent / "predictions.parquet"
    predict_cohort(dashboard_bundle, dashboard_cohort, out, progress=False)
    return out


@pytest.fixture(scope="session")
def full_patient(dashboard_predictions: Path) -> str:
    """A predicted patient with a note and a chest X-ray (for the highlighted note and the saliency)."""
    frame = read_predictions(dashboard_predictions)
    chosen = frame[(frame["status"] == "ok") & frame["present_notes"] & frame["present_cxr"]]
    assert len(chosen), "the synthetic cohort has no patient with both a note and an image"
    return str(chosen.iloc[0]["patient_id"])


@pytest.fixture
def dashboard_args(monkeypatch: pytest.MonkeyPatch):
    """Set the script arguments ``deepwe dashboard`` gives the dashboard (what ``streamlit run`` puts
    in ``sys.argv``); returns the setter."""
    for name in ("DEEPWE_MODEL", "DEEPWE_COHORT", "DEEPWE_PREDICTIONS"):
        monkeypatch.delenv(name, raising=False)

    def use(model: Path, cohort: Path, predictions: Path | None = None) -> None:
        argv = [str(DASHBOARD), "--model", str(model), "--cohort", str(cohort)]
        if predictions is not None:
            argv += ["--predictions", str(predictions)]
        monkeypatch.setattr(sys, "argv", argv)

    return use


@pytest.fixture
def broken_image_cohort(dashboard_cohort: Path, full_patient: str, tmp_path: Path) -> Path:
    """A copy of the cohort where ``full_patient``'s chest X-ray is truncated to 100 bytes."""
    target = tmp_path / "cohort"
    shutil.copytree(dashboard_cohort.parent, target)
    table = pd.read_csv(target / "cohort.csv", dtype=str, keep_default_na=False)
    cell = table.loc[table["patient_id"] == full_patient, "cxr_path"].item()
    image = target / cell
    image.write_bytes(image.read_bytes()[:100])
    return target / dashboard_cohort.name
