"""Synthetic cohorts and one-epoch demo models for the prediction-engine benchmarks.

A cohort of ``n`` patients is written once (``pipelines.sources.synth.generate_cohort``, 20% missing per
modality) and restricted to a modality set by editing its spec, so every set reads the same files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from pipelines.sources.synth import generate_cohort
from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench" / "predict"
SETS = {"all": None, "tabular+sensor": ("labs", "vitals", "ecg")}


def config() -> TrainConfig:
    """The demo settings, trained for one epoch."""
    return replace(TrainConfig.from_yaml(ROOT / "configs" / "demo.yaml"), epochs=1)


def trained(spec: Path, folder: Path) -> Path:
    """A bundle trained on ``spec`` (reused when it is already there)."""
    if not (folder / "manifest.json").is_file():
        train(spec, folder, config(), device="cpu", progress=False)
    return folder


def cohort(n: int, modality_set: str) -> Path:
    """A synthetic cohort of ``n`` patients restricted to ``modality_set`` (spec edited, files kept)."""
    folder = WORK / f"cohort-{n}"
    if not (folder / "cohort.yaml").is_file():
        generate_cohort(folder, n=n, seed=0, missing_rate=0.2)
    keep = SETS[modality_set]
    spec_path = folder / f"cohort-{modality_set.replace('+', '-')}.yaml"
    spec = yaml.safe_load((folder / "cohort.yaml").read_text())
    if keep is not None:
        spec["modalities"] = {k: v for k, v in spec["modalities"].items() if k in keep}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path
