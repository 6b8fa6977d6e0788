"""Prediction throughput and peak memory (issue 5's evidence).

For each cohort size and modality set it writes a synthetic cohort, trains a tiny model once (the
figures are about prediction, not accuracy), then runs ``deepwe predict`` in a fresh process and
reads that process's peak resident memory (``getrusage`` of the child). Flat memory means the
10,000-patient run peaks within 10% of the 1,000-patient run.

    python -m benchmarks.predict [--sizes 1000,10000] [--sets all,tabular+sensor] [--out PATH]

Everything it writes goes under ``runs/bench/predict/`` except the JSON of results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipelines.synth import generate_cohort
from pipelines.train import train
from pipelines.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench" / "predict"
SETS = {"all": None, "tabular+sensor": ("labs", "vitals", "ecg")}


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
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "--device", "cpu"],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, int(result.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--sets", default="all,tabular+sensor")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for modality_set in args.sets.split(","):
        train_spec = cohort(min(sizes), modality_set)
        model = WORK / f"model-{modality_set.replace('+', '-')}"
        if not (model / "manifest.json").is_file():
            train(
                train_spec,
                model,
                TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml"),
                device="cpu",
                progress=False,
            )
        for n in sizes:
            seconds, peak = peak_predict(
                model, cohort(n, modality_set), WORK / f"pred-{n}-{modality_set}.parquet"
            )
            rows.append({"benchmark": "predict", "method": f"deepwe {modality_set}", "n": n,
                         "seconds": round(seconds, 1), "patients_per_s": round(n / seconds, 2),
                         "peak_rss_mib": round(peak, 1)})  # fmt: skip
            print(
                f"| {modality_set} | {n} | {seconds:.1f} s | {n / seconds:.1f} patients/s | {peak:.0f} MiB |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
