"""From files to risk on PhysioNet 2012 set A: ``deepwe predict`` cold and warm, gradient boosting
from the same files, peak memory against cohort size, and training seconds per epoch.

Every figure is measured in one run, on the same 3,996 stays (tabular + sensor), next to its
anchor:

- ``deepwe predict`` as a user runs it (a fresh process: start-up, bundle load, reading, model,
  output file), with the decoded-file cache empty (cold) and then filled by that run (warm), on
  the cores the machine has and ``--workers`` at its default. Patients per second are given both
  for the whole process and as ``deepwe predict`` reports them (prediction only). Peak resident
  memory is that of the process tree (``getrusage`` of the children).
- gradient boosting end to end from the same files: summary features read with the same readers
  (:mod:`benchmarks.summary_features`), then ``predict_proba``.
- each prediction figure is the mean (and sd) of ``REPEATS`` rounds; a round runs every variant
  once, in turn, so that all meet the same background load.
- peak memory of warm runs at 1,000 and 10,000 rows (the 10,000-row table cycles through the stays
  with new ids; flat means within 10%).
- training (``configs/demo.yaml``, a fixed number of epochs): seconds per epoch and the whole call,
  with a cold cache and again with a warm one.
- with ``--before DIR`` (an export of earlier code, e.g. ``git archive <commit> | tar -x -C DIR``):
  the same training and predict runs (cold and warm) of that code, with a decoded-file cache of its
  own, as the before-and-after anchor (``--before-cache off``: that code without the cache, for code
  older than the cache).

The models use ``configs/demo.yaml``: the figures are about speed, not accuracy.

    python -m benchmarks.speed --throughput [--before DIR [--before-cache off]]     # rows as JSON, also written to
                                                               # benchmarks/results/full/speed/throughput.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.rows import result_row

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench" / "throughput"
SHARED_DATA = ROOT.parent / "shared" / "data"
P12_OUTCOME = "In-hospital_death"
TRAIN_EPOCHS = 3
REPEATS = 2

_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)
_TRAIN = (
    "import json, sys, time; from dataclasses import replace; import torch; "
    "from pipelines.training.train import train; from pipelines.training.train_config import TrainConfig; "
    "config = replace(TrainConfig.from_yaml(sys.argv[1]), epochs=int(sys.argv[4]), patience=int(sys.argv[4])); "
    "result = train(sys.argv[2], sys.argv[3], config, device='cpu', progress=False); "
    "print(json.dumps({'seconds': result.seconds, 'epoch_seconds': list(result.epoch_seconds)}))"
)


def _environment(code: Path, cache: Path | str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(code),
        "DEEPWE_CACHE_DIR": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def p12_spec(work: Path) -> Path:
    """The PhysioNet 2012 set A cohort, imported once under ``work``."""
    from pipelines.sources.importers import import_dataset

    spec = work / "imports" / "p12" / "cohort.yaml"
    if not spec.is_file():
        import_dataset("physionet2012", SHARED_DATA / "physionet2012", spec.parent)
    return spec


def cycled_spec(spec: Path, rows: int) -> Path:
    """A copy of ``spec`` whose table has ``rows`` rows, cycling through the stays with new ids."""
    table = pd.read_csv(spec.parent / "cohort.csv", dtype=str, keep_default_na=False)
    picked = table.iloc[np.arange(rows) % len(table)].reset_index(drop=True)
    picked["RecordID"] = [f"{i:06d}-{rid}" for i, rid in enumerate(picked["RecordID"])]
    name = f"cohort-{rows}"
    picked.to_csv(spec.parent / f"{name}.csv", index=False)
    document = yaml.safe_load(spec.read_text())
    document["table"] = f"{name}.csv"
    out = spec.parent / f"{name}.yaml"
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


def train_bundle(code: Path, spec: Path, folder: Path, epochs: int, cache: Path | str) -> dict[str, Any]:
    """Train with ``code`` (demo settings, ``epochs`` epochs) in a fresh process; its timings."""
    shutil.rmtree(folder, ignore_errors=True)
    command = [
        sys.executable,
        "-c",
        _TRAIN,
        str(ROOT / "configs" / "demo.yaml"),
        str(spec),
        str(folder),
        str(epochs),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=_environment(code, cache), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"training with {code} failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": wall}


def run_predict(code: Path, model: Path, spec: Path, out: Path, cache: Path | str) -> dict[str, Any]:
    """``deepwe predict`` of ``code`` in a fresh process: wall seconds, its own rate, peak RSS."""
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pipelines.cli", "predict", str(model), str(spec), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "--device", "cpu"],
        cwd=code,
        env=_environment(code, cache),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: written, but many rows lost a modality
        raise RuntimeError(f"predict with {code} failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = len(pd.read_parquet(out, columns=["row"]))
    reported = re.search(r"\(([\d.]+) patients/s", done.stdout)
    return {
        "rows": rows,
        "seconds": wall,
        "patients_per_s": rows / wall,
        "reported_patients_per_s": float(reported[1]) if reported else None,
        "peak_rss_mib": int(done.stderr.strip().splitlines()[-1]) / 1024,
    }


def gradient_boosting(spec: Path) -> dict[str, Any]:
    """Gradient boosting end to end from the files: summary features, then ``predict_proba``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from benchmarks.baselines import GB_PARAMS
    from benchmarks.summary_features import cohort_features
    from pipelines.cohorts.cohort_table import load_cohort

    cohort = load_cohort(spec)
    started = time.perf_counter()
    features = cohort_features(cohort).frame.to_numpy(dtype=float)
    extract = time.perf_counter() - started
    labels = cohort.table[P12_OUTCOME].astype(int).to_numpy()
    train_rows = np.array([cohort.split_of(row) == "train" for row in range(1, len(labels) + 1)])
    model = HistGradientBoostingClassifier(**GB_PARAMS, random_state=0).fit(
        features[train_rows], labels[train_rows]
    )
    started = time.perf_counter()
    model.predict_proba(features)
    scoring = time.perf_counter() - started
    return {
        "rows": len(labels),
        "seconds": extract + scoring,
        "patients_per_s": len(labels) / (extract + scoring),
        "feature_seconds": extract,
        "predict_proba_seconds": scoring,
    }


def _row(method: str, metric: str, values: Any, n: int, anchor: float | None = None) -> dict[str, Any]:
    return result_row("speed", method, metric, values, anchor=anchor, n=n)


def _predict_rows(
    label: str, results: list[dict[str, Any]], anchor: float | None = None
) -> list[dict[str, Any]]:
    """Rate (whole process and as reported) and peak memory of repeated predict runs (mean and sd
    over the repeats); ``anchor``: the rate they are measured against."""
    n = results[0]["rows"]
    rows = [
        _row(label, "patients/s, whole process", [r["patients_per_s"] for r in results], n, anchor),
        _row(label, "seconds, whole process", [r["seconds"] for r in results], n),
        _row(label, "peak RSS MiB", [r["peak_rss_mib"] for r in results], n),
    ]
    if all(r["reported_patients_per_s"] is not None for r in results):
        reported = [r["reported_patients_per_s"] for r in results]
        rows.append(_row(label, "patients/s as deepwe predict reports it", reported, n))
    return rows


def _train_rows(label: str, result: dict[str, Any], n: int) -> list[dict[str, Any]]:
    epochs = result["epoch_seconds"]
    return [
        _row(label, "train seconds per epoch", epochs, n),
        _row(label, f"train seconds, whole process ({len(epochs)} epochs)", result["wall_seconds"], n),
    ]


def run(work: Path = WORK, before: Path | None = None, before_cache: bool = True) -> list[dict[str, Any]]:
    """Every throughput row (see the module docstring)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = p12_spec(work)
    n = len(pd.read_csv(spec.parent / "cohort.csv", usecols=["RecordID"]))
    cache = work / "decoded-cache"
    cache_before: Path | str = work / "decoded-cache-before" if before_cache else "off"
    states_before = ("cold", "warm") if before_cache else ("off",)
    rows: list[dict[str, Any]] = []
    shutil.rmtree(cache, ignore_errors=True)
    rows += _train_rows(
        "deepwe train p12, cache cold", train_bundle(ROOT, spec, work / "model", TRAIN_EPOCHS, cache), n
    )
    rows += _train_rows(
        "deepwe train p12, cache warm", train_bundle(ROOT, spec, work / "model", TRAIN_EPOCHS, cache), n
    )
    if before is not None:
        if before_cache:
            shutil.rmtree(cache_before, ignore_errors=True)
        trained = train_bundle(before, spec, work / "model-before", TRAIN_EPOCHS, cache_before)
        rows += _train_rows(f"before: deepwe train p12, cache {states_before[0]}", trained, n)
    # Each repeat runs every variant once, in turn, so that all meet the same background load.
    runs: dict[str, list[dict[str, Any]]] = {}
    boosting = []
    for _ in range(REPEATS):
        boosting.append(gradient_boosting(spec))
        shutil.rmtree(cache, ignore_errors=True)
        for state in ("cold", "warm"):
            result = run_predict(ROOT, work / "model", spec, work / f"{state}.parquet", cache)
            runs.setdefault(f"deepwe predict p12, cache {state}", []).append(result)
        if before is not None:
            if before_cache:
                shutil.rmtree(cache_before, ignore_errors=True)
            for state in states_before:
                result = run_predict(
                    before, work / "model-before", spec, work / "before.parquet", cache_before
                )
                runs.setdefault(f"before: deepwe predict p12, cache {state}", []).append(result)
        for size in (1000, 10000):
            result = run_predict(
                ROOT, work / "model", cycled_spec(spec, size), work / f"warm-{size}.parquet", cache
            )
            runs.setdefault(f"deepwe predict p12 rows cycled to {size}, cache warm", []).append(result)
    gb_rate = float(np.mean([b["patients_per_s"] for b in boosting]))
    gb = "gradient boosting p12, summary features from the files"
    rows.append(_row(gb, "patients/s, end to end", [b["patients_per_s"] for b in boosting], n))
    rows.append(_row(gb, "feature extraction seconds", [b["feature_seconds"] for b in boosting], n))
    for label, results in runs.items():
        rows += _predict_rows(label, results, anchor=gb_rate)
    return rows


def main(before: Path | None, out: Path, before_cache: bool = True) -> None:
    """Run, print and write the rows."""
    rows = run(before=before, before_cache=before_cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
