"""The Ray engine against the local engine on the same synthetic cohorts: patients/s, peak memory and
the fixed start-up cost.

Each run is ``deepwe predict`` in a fresh process (the cohorts and the model of
``benchmarks.synthetic_cohorts``: demo settings trained one epoch, note cache emptied before every run). Peak
memory is the largest sum of resident memory over the run's whole process tree (driver, and for Ray
its GCS, raylet and workers), sampled every 0.2 s; CPU seconds are those of the reaped tree. Two
cohort sizes per engine give the cost per patient (the slope) and the fixed cost of a run (the
intercept: start-up, model loading, assembly); the Ray engine's extra start-up is the difference of
the intercepts. The engines alternate, so that both meet the same background load, and each row
records the load average during its run.

    python -m benchmarks.predict_ray [--sizes 20,1000] [--set all] [--workers 2] [--cpus-per-worker 1]

Writes ``benchmarks/results/full/speed/predict_ray.json``; cohorts, models and outputs go under
``runs/bench/predict/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.synthetic_cohorts import ROOT, WORK, cohort, trained

_PAGE_KIB = 4


def _tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, in MiB (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = pages * _PAGE_KIB
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(pid, 0) for pid in tree) / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds of the reaped process tree, its peak MiB and the load average around
    one command (other jobs on the machine slow the wall clock; CPU seconds move less)."""
    load = os.getloadavg()[0]
    cpu, started = _cpu_seconds(), time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _tree_rss_mib(process.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    output = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "peak_mib": peak,
            "load_average": (load + os.getloadavg()[0]) / 2}  # fmt: skip


def predict_command(model: Path, spec: Path, out: Path, options: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pipelines.cli", "predict", str(model), str(spec), "--out", str(out)]
    return [*command, "--device", "cpu", *options]


def configurations(workers: int, cpus: float) -> dict[str, list[str]]:
    """The runs compared: the local engine reading files in its main process (the default) and with
    as many DataLoader processes as Ray workers, and the Ray engine."""
    return {
        "local": ["--engine", "local"],
        f"local --workers {workers}": ["--engine", "local", "--workers", str(workers)],
        "ray": ["--engine", "ray", "--workers", str(workers), "--cpus-per-worker", str(cpus)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,1000", help="Two cohort sizes (for slope and intercept).")
    parser.add_argument("--set", default="all", choices=["all", "tabular+sensor"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "full" / "speed" / "predict_ray.json"
    )
    args = parser.parse_args()
    small, large = (int(s) for s in args.sizes.split(","))
    # its own model (one model per engine comparison)
    model = trained(cohort(max(small, 200), args.set), WORK / f"model-ray-{args.set.replace('+', '-')}")
    runs = configurations(args.workers, args.cpus_per_worker)
    rows, times, outputs = [], {name: {} for name in runs}, {name: {} for name in runs}
    for n in (small, large):
        for name, options in runs.items():  # in turn, so that every run meets the same background load
            out = WORK / f"pred-{name.replace(' ', '').replace('--', '-')}-{n}-{args.set}.parquet"
            out.unlink(missing_ok=True)
            shutil.rmtree(model.parent / ".text-cache", ignore_errors=True)  # cold notes, every run
            measured = run(predict_command(model, cohort(n, args.set), out, options))
            times[name][n], outputs[name][n] = measured["seconds"], out
            ray = name == "ray"
            rows.append({"benchmark": "predict-engine", "run": name, "set": args.set, "n": n,
                         "seconds": round(measured["seconds"], 1),
                         "patients_per_s": round(n / measured["seconds"], 2),
                         # Ray's workers are not reaped by the run's process: their CPU is not counted
                         "cpu_seconds": None if ray else round(measured["cpu_seconds"], 1),
                         "peak_tree_rss_mib": round(measured["peak_mib"], 1),
                         "load_average": round(measured["load_average"], 1)})  # fmt: skip
            print(rows[-1], flush=True)
    summary: dict = {"benchmark": "predict-engine-fit", "set": args.set, "sizes": [small, large]}
    for name, seconds in times.items():
        slope = (seconds[large] - seconds[small]) / (large - small)
        summary[f"{name}: fixed seconds"] = round(seconds[small] - small * slope, 1)
        summary[f"{name}: steady patients/s"] = round(1 / slope, 2)
    summary["ray extra start-up seconds"] = round(
        summary["ray: fixed seconds"] - summary["local: fixed seconds"], 1
    )
    risk_gap, same_decisions = 0.0, True
    for n in (small, large):
        local, remote = (pd.read_parquet(outputs[name][n]) for name in ("local", "ray"))
        risk_gap = max(risk_gap, float((local["risk"] - remote["risk"]).abs().max()))
        same_decisions &= local[["row", "status", "label"]].equals(remote[["row", "status", "label"]])
    summary["max |risk local - risk ray|"] = risk_gap
    summary["same rows, statuses and labels"] = same_decisions
    rows.append(summary)
    print(summary, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
