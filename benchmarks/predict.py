"""Prediction throughput and peak memory.

For each cohort size and modality set it writes a synthetic cohort, trains a tiny model once (the
figures are about prediction, not accuracy), then runs ``deepwe predict`` in a fresh process and
reads that process's peak resident memory (``getrusage`` of the child). Flat memory means the
10,000-patient run peaks within 10% of the 1,000-patient run.

The anchor is what a team would otherwise run nightly: gradient boosting on summary features of
the PhysioNet 2012 set A rows (feature extraction with the project's readers, then
``predict_proba``), timed next to ``deepwe predict`` on the same rows with a model trained on them.

The models use ``configs/demo.yaml`` with one epoch: the figures are about prediction, not accuracy,
and the demo settings are the sizes a first user meets. The text cache starts empty for every run,
so notes are encoded cold, as they are for a nightly run over new notes.

    python -m benchmarks.predict [--sizes 1000,10000] [--sets all,tabular+sensor] [--no-anchor]

Everything it writes goes under ``runs/bench/predict/`` except the JSON of results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier

from benchmarks.deepwe_vs_baselines import GB_PARAMS
from benchmarks.summary_features import cohort_features
from benchmarks.unimodal import SHARED_DATA
from pipelines.cohort import load_cohort
from pipelines.importers import import_dataset
from pipelines.synth import generate_cohort
from pipelines.train import train
from pipelines.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench" / "predict"
SETS = {"all": None, "tabular+sensor": ("labs", "vitals", "ecg")}
P12_OUTCOME = "In-hospital_death"


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


_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_predict(model: Path, spec: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one ``deepwe predict`` run, measured by a fresh parent process."""
    command = [sys.executable, "-m", "pipelines.cli", "predict", str(model), str(spec), "--out", str(out)]
    shutil.rmtree(model.parent / ".text-cache", ignore_errors=True)  # cold notes, every run
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "--device", "cpu"],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, int(result.stdout.strip()) / 1024


def p12_anchor() -> list[dict]:
    """DeepWe and gradient boosting predicting every PhysioNet 2012 set A row (rows for the table)."""
    imported = import_dataset("physionet2012", SHARED_DATA / "physionet2012", WORK / "imports" / "p12")
    cohort = load_cohort(imported.spec_path)
    n = len(cohort.table)
    model = trained(imported.spec_path, WORK / "model-p12")
    seconds, peak = peak_predict(model, imported.spec_path, WORK / "pred-p12.parquet")
    rows = [{"benchmark": "predict", "method": "deepwe p12 tabular+sensor", "n": n,
             "seconds": round(seconds, 1), "patients_per_s": round(n / seconds, 2),
             "peak_rss_mib": round(peak, 1)}]  # fmt: skip
    started = time.perf_counter()
    features = cohort_features(cohort).frame.to_numpy(dtype=float)
    extract = time.perf_counter() - started
    labels = cohort.table[P12_OUTCOME].astype(int).to_numpy()
    train_rows = np.array([cohort.split_of(row) == "train" for row in range(1, n + 1)])
    gb = HistGradientBoostingClassifier(**GB_PARAMS, random_state=0).fit(
        features[train_rows], labels[train_rows]
    )
    started = time.perf_counter()
    gb.predict_proba(features)
    scoring = time.perf_counter() - started
    rows.append({"benchmark": "predict", "method": "gradient boosting p12 summary features", "n": n,
                 "seconds": round(extract + scoring, 1), "patients_per_s": round(n / (extract + scoring), 2),
                 "feature_seconds": round(extract, 1), "predict_proba_seconds": round(scoring, 3)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--sets", default="all,tabular+sensor")
    parser.add_argument("--no-anchor", action="store_true", help="Skip the PhysioNet 2012 anchor.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for modality_set in args.sets.split(","):
        model = trained(cohort(min(sizes), modality_set), WORK / f"model-{modality_set.replace('+', '-')}")
        for n in sizes:
            seconds, peak = peak_predict(
                model, cohort(n, modality_set), WORK / f"pred-{n}-{modality_set}.parquet"
            )
            rows.append({"benchmark": "predict", "method": f"deepwe {modality_set}", "n": n,
                         "seconds": round(seconds, 1), "patients_per_s": round(n / seconds, 2),
                         "peak_rss_mib": round(peak, 1)})  # fmt: skip
            print(rows[-1], flush=True)
    if not args.no_anchor:
        for row in p12_anchor():
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
