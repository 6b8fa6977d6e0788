"""Speed and memory: how fast DeepWe trains, predicts and explains, and where the time goes.

On a synthetic cohort (``pipelines.sources.synth.generate_cohort``, 20% missing per modality) with the demo
settings (``configs/demo.yaml``), each stage runs in a fresh process so that its peak resident
memory is its own (``getrusage(RUSAGE_CHILDREN)`` of a small parent that runs only that stage):

- training (``pipelines.training.train.train``): seconds per epoch, the whole run to early stopping, peak RSS;
- batch prediction (``pipelines.inference.predict.predict_cohort``, text cache emptied first, so notes are
  encoded cold as in a nightly run over new notes): patients per second per chunk and for the whole
  run, peak RSS;
- explanation (``pipelines.explanations.explaining.explain_patient``, 32 Integrated Gradients steps) of patients
  with every modality present, after one warm-up patient: seconds per patient, peak RSS.

In this process: the floating-point operations per patient (``torch.utils.flop_counter``) of the
model forward and of the batch collation (where the frozen language model encodes the notes), the
machine's fp32 matmul rate (large ``torch.mm``), the share of that ceiling the prediction path
reaches, and a ``cProfile`` of a prediction run grouped into where the time goes.

On a CUDA GPU the same stages run again with ``device="cuda"``: training with bf16 autocast (as
``train`` does on a GPU), prediction under bf16 autocast, explanation in float32 (as
``explain_patient`` requires); their rows carry the CPU figure as the anchor, and the speed-up over
the CPU gets rows of its own. Without a GPU those rows are absent and a note says so.

    python -m benchmarks.speed [--quick]          # prints the rows; `python -m benchmarks.suite` tables them
    python -m benchmarks.speed --throughput [--before DIR]   # PhysioNet 2012 files to risk (benchmarks.throughput)

Work files go under the ``work`` folder the suite gives (``runs/bench/suite/speed/``).
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import logging
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.rows import result_row

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
BENCHMARK = "speed"
notes = logging.getLogger("benchmarks.notes")
log = logging.getLogger("benchmarks.speed")


@dataclass(frozen=True)
class SpeedSettings:
    """Sizes of one speed run.

    Attributes:
        patients: synthetic cohort size.
        epochs: training epochs (None: the demo config's, with its early stopping).
        chunk_size: prediction rows per chunk; throughput is measured per chunk.
        explain_patients: patients explained after the warm-up one.
        explain_steps: Integrated Gradients steps.
        flop_batches: prediction batches whose FLOPs are counted.
        profile_every: the profile predicts every k-th patient (shard 0/k).
        matmul_size: side of the square matrices timed for the matmul rate on the CPU.
        matmul_repeats: timed products.
    """

    patients: int
    epochs: int | None
    chunk_size: int
    explain_patients: int
    explain_steps: int = 32
    flop_batches: int = 1
    profile_every: int = 1
    matmul_size: int = 2048
    matmul_repeats: int = 5


QUICK = SpeedSettings(patients=150, epochs=2, chunk_size=32, explain_patients=2, profile_every=3)
FULL = SpeedSettings(
    patients=1000, epochs=None, chunk_size=64, explain_patients=5, flop_batches=2, profile_every=4
)


# --- measuring helpers ------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: int = 2048,
    repeats: int = 5,
    inner: int = 1,
) -> list[float]:
    """GFLOP/s of ``repeats`` timed square products (``inner`` back-to-back ``torch.mm`` each).

    Args:
        size: side of the (size, size) matrices; one product is 2·size³ floating-point operations.
        inner: products per timing, so that a fast device is not timed on launch overhead alone.
    """
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: library initialisation and caches
    _synchronize(device)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _synchronize(device)
        rates.append(2 * size**3 * inner / (time.perf_counter() - started) / 1e9)
    return rates


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """``fn(*args, **kwargs)`` and the floating-point operations ``torch.utils.flop_counter`` saw.

    A multiply-add counts as 2; operations without a registered formula (element-wise ones,
    interpolation, and on the CPU the fused attention kernel of the language model) count as 0, so
    the figure is the matmul and convolution work, a slight undercount for the notes.
    """
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


def cumulative_seconds(stats: pstats.Stats, function: Callable[..., Any]) -> float:
    """Seconds spent inside ``function`` (callees included) according to a ``cProfile`` run."""
    code = inspect.unwrap(function).__code__
    key = (code.co_filename, code.co_firstlineno, code.co_name)
    entry = stats.stats.get(key)  # type: ignore[attr-defined]
    return 0.0 if entry is None else float(entry[3])


def prediction_time_shares(stats: pstats.Stats) -> dict[str, float]:
    """Where a profiled ``predict_cohort`` run spent its time, as shares summing to 1.

    The groups are disjoint in the call tree: file reading happens in the dataset, input hashing
    beside it, note encoding inside the batch collation (subtracted from it), the model forward
    and the output rows after it; "other Python" is the rest (loading, the loop, cProfile's own cost).
    """
    from encoders.text import TextEncoder
    from pipelines.bundles.model_builder import MultimodalModel
    from pipelines.cohorts.dataset import CohortDataset, PatientCollator
    from pipelines.inference import batch_records, batching, output_table, predict

    total = cumulative_seconds(stats, predict.predict_cohort)
    if total <= 0:
        raise ValueError("the profile holds no predict_cohort call")
    text = cumulative_seconds(stats, TextEncoder._collate_embeddings)
    seconds = {
        "reading and decoding files": cumulative_seconds(stats, CohortDataset._read_file),
        "hashing input files": cumulative_seconds(stats, batching.input_sha256),
        "text encoding (language model)": text,
        "collating other modalities": cumulative_seconds(stats, PatientCollator.__call__) - text,
        "model forward": cumulative_seconds(stats, MultimodalModel.forward),
        "output rows and files": sum(
            cumulative_seconds(stats, f)
            for f in (batch_records.ok_records, output_table.records_table, predict._assemble)
        ),
    }
    seconds["other Python"] = max(0.0, total - sum(seconds.values()))
    return {name: value / total for name, value in seconds.items()}


def row(
    method: str,
    metric: str,
    values: Sequence[float] | float,
    *,
    anchor: float | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """A results row of the speed table; a single number is one measurement."""
    return result_row(BENCHMARK, method, metric, values, anchor=anchor, n=n)


# --- stages, each in a fresh process ------------------------------------------------------------------

_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def run_stage(stage: str, arguments: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run ``stage`` in a fresh process (under a parent that reads its peak RSS); its JSON result.

    Raises:
        RuntimeError: the stage failed (the last line of its error output in the message; all of it
            in the log).
    """
    result_path = work / f"stage-{stage}-{arguments['device'].replace(':', '')}.json"
    result_path.unlink(missing_ok=True)
    payload = json.dumps({**arguments, "result": str(result_path)})
    command = [
        sys.executable,
        "-c",
        _MEASURE,
        sys.executable,
        "-m",
        "benchmarks.speed",
        "--stage",
        stage,
        payload,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    log.info("stage %s on %s: %.1f s", stage, arguments["device"], time.perf_counter() - started)
    if done.returncode != 0:
        log.error("stage %s failed:\n%s", stage, done.stderr)
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        raise RuntimeError(f"speed stage {stage} on {arguments['device']} failed: {last}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mib"] = int(done.stdout.strip().splitlines()[-1]) / 1024
    return result


def _empty_text_cache(bundle) -> None:
    """Remove the bundle's note-embedding cache, so that the language model encodes every note."""
    if bundle.preprocessing.get("text_cache"):
        shutil.rmtree(bundle.preprocessing["text_cache"], ignore_errors=True)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _gpu_peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_config(epochs: int | None, text_cache: Path):
    """The demo settings (``epochs`` overridden when given), notes cached in ``text_cache``."""
    from pipelines.training.train_config import TrainConfig

    config = TrainConfig.from_yaml(DEMO_CONFIG)
    config = replace(config, text_cache=str(text_cache))
    return config if epochs is None else replace(config, epochs=epochs)


def _stage_train(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.training.train import train

    device = torch.device(args["device"])
    config = train_config(args["epochs"], Path(args["text_cache"]))
    shutil.rmtree(args["text_cache"], ignore_errors=True)
    result = train(args["spec"], args["model"], config, device=args["device"], progress=False)
    return {
        "seconds": result.seconds,
        "epochs_run": result.epochs_run,
        "best_epoch": result.metrics.get("best_epoch"),
        "epoch_seconds": list(result.epoch_seconds) or None,
        "test_auroc": result.metrics.get("test", {}).get("auroc"),
        "peak_gpu_mib": _gpu_peak(device),
    }


def _stage_predict(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.bundles.loading import load_bundle
    from pipelines.inference.batching import PredictOptions
    from pipelines.inference.predict import predict_cohort

    device = torch.device(args["device"])
    started = time.perf_counter()
    bundle = load_bundle(args["model"], device=device)
    load_seconds = time.perf_counter() - started
    _empty_text_cache(bundle)  # cold notes, as in a nightly run over new notes
    stamps, sizes = [], []

    def finished(records, batch: str) -> None:
        stamps.append(time.perf_counter())
        sizes.append(len(records))

    options = PredictOptions(chunk_size=args["chunk_size"])
    started = time.perf_counter()
    with _autocast(device):
        done = predict_cohort(bundle, args["spec"], args["out"], options, progress=False, on_records=finished)
    edges = [started, *stamps]
    return {
        "load_seconds": load_seconds,
        "seconds": done.seconds,
        "rows": done.rows,
        "errors": done.errors,
        "chunk_rates": [size / (edges[i + 1] - edges[i]) for i, size in enumerate(sizes)],
        "peak_gpu_mib": _gpu_peak(device),
    }


def _stage_explain(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.bundles.loading import load_bundle
    from pipelines.cohorts.cohort_table import load_cohort
    from pipelines.explanations.explaining import explain_patient

    device = torch.device(args["device"])
    bundle = load_bundle(args["model"], device=device)
    cohort = load_cohort(args["spec"])
    seconds = []
    for number, patient in enumerate(args["patients"]):
        # The warm-up (first) patient loads the language model and pays first-call costs; two steps do.
        steps = 2 if number == 0 else args["steps"]
        started = time.perf_counter()
        explain_patient(bundle, cohort, patient, steps=steps)
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
    return {"warmup_seconds": seconds[0], "seconds": seconds[1:], "peak_gpu_mib": _gpu_peak(device)}


STAGES = {"train": _stage_train, "predict": _stage_predict, "explain": _stage_explain}


# --- in this process: FLOPs, matmul ceiling, profile ------------------------------------------------


def prediction_flops(
    bundle, cohort, *, batches: int, batch_size: int = 64
) -> tuple[list[float], list[float]]:
    """FLOPs per patient of the model forward and of the batch collation, one value per batch.

    Batches are built as ``iter_predictions`` builds them (its dataset, its collation, patients with
    no usable modality left out), with the text cache emptied first so that the language model runs.
    """
    from pipelines.cohorts.dataset import PatientCollator
    from pipelines.inference.batching import PredictionDataset

    count = min(len(cohort.table), batches * batch_size)
    positions = list(range(count))
    dataset = PredictionDataset(
        bundle, cohort, list(cohort.records(positions)), cohort.table.iloc[positions].reset_index(drop=True)
    )
    collate = PatientCollator(bundle.model.encoders)
    _empty_text_cache(bundle)
    forward, collation = [], []
    for start in range(0, count, batch_size):
        samples = [dataset[i][0] for i in range(start, min(count, start + batch_size))]
        samples = [s for s in samples if any(value is not None for value in s.inputs.values())]
        batch, collate_flops = count_flops(collate, samples)
        with torch.no_grad(), _autocast(bundle.device):
            _, forward_flops = count_flops(bundle.model, batch.to(bundle.device))
        forward.append(forward_flops / len(samples))
        collation.append(collate_flops / len(samples))
    return forward, collation


def profile_prediction(bundle, spec: Path, out: Path, every: int) -> dict[str, float]:
    """Time shares of a ``cProfile``-d prediction of every ``every``-th patient (cold text cache)."""
    from pipelines.inference.batching import PredictOptions
    from pipelines.inference.predict import predict_cohort

    _empty_text_cache(bundle)
    options = PredictOptions(shard=(0, every) if every > 1 else None)
    profiler = cProfile.Profile()
    with _autocast(bundle.device):
        profiler.runcall(predict_cohort, bundle, spec, out, options, progress=False)
    return prediction_time_shares(pstats.Stats(profiler))


def complete_patients(cohort_folder: Path, count: int) -> list[str]:
    """The first ``count`` patients with every modality present (``ground_truth.json``)."""
    truth = json.loads((cohort_folder / "ground_truth.json").read_text())
    complete = [p["patient_id"] for p in truth["patients"] if not p["missing"]]
    if len(complete) < count:
        raise ValueError(f"{cohort_folder}: {len(complete)} patients have every modality, {count} needed")
    return complete[:count]


# --- the part -------------------------------------------------------------------------------------------


def _device_rows(
    label: str, explain_label: str, trained: dict, predicted: dict, explained: dict, cpu: dict | None
) -> list[dict[str, Any]]:
    """Rows of one device's stages; ``cpu`` holds the CPU means by metric, used as anchors."""
    per_epoch = trained["epoch_seconds"] or [trained["seconds"] / trained["epochs_run"]]
    per_epoch_metric = (
        "train seconds per epoch"
        if trained["epoch_seconds"]
        else "train seconds per epoch (whole run ÷ epochs, incl. calibration and bundle writing)"
    )
    measured: list[tuple[str, str, Any]] = [
        (label, per_epoch_metric, per_epoch if trained["epoch_seconds"] else per_epoch[0]),
        (label, "train seconds to convergence (whole run, early stopping)", trained["seconds"]),
        (label, "epochs run", trained["epochs_run"]),
        (label, "best epoch (validation AUROC)", trained["best_epoch"]),
        (label, "train peak RSS MiB", trained["peak_rss_mib"]),
        (label, "test AUROC (context: the model trained for this run)", trained["test_auroc"]),
        (label, "predict patients/s per chunk (cold text cache)", predicted["chunk_rates"]),
        (label, "predict patients/s, whole run", predicted["rows"] / predicted["seconds"]),
        (label, "bundle load seconds", predicted["load_seconds"]),
        (label, "predict peak RSS MiB", predicted["peak_rss_mib"]),
        (explain_label, "explain seconds per patient (32 IG steps, all modalities)", explained["seconds"]),
        (explain_label, "explain seconds per patient, median", statistics.median(explained["seconds"])),
        (explain_label, "explain peak RSS MiB", explained["peak_rss_mib"]),
    ]
    for stage, result in (("train", trained), ("predict", predicted), ("explain", explained)):
        if result.get("peak_gpu_mib") is not None:
            measured.append(
                (
                    label if stage != "explain" else explain_label,
                    f"{stage} peak GPU MiB",
                    result["peak_gpu_mib"],
                )
            )
    rows = []
    for method, metric, values in measured:
        if values is None:  # no test split, or a figure the device does not have
            continue
        anchor = None if cpu is None else cpu.get(metric)
        # The whole run divided by its epochs is still a figure over that many epochs.
        n = trained["epochs_run"] if metric == per_epoch_metric else None
        rows.append(row(method, metric, values, anchor=anchor, n=n))
    return rows


def _stages(
    device: str, cohort: Path, work: Path, settings: SpeedSettings, *, bundle: Path, train_into: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Train into ``train_into``, then predict and explain with ``bundle``, each stage in its own process."""
    spec = str(cohort / "cohort.yaml")
    text_cache = train_into.parent / f"text-cache-{train_into.name}"
    trained = run_stage(
        "train",
        {
            "device": device,
            "spec": spec,
            "model": str(train_into),
            "epochs": settings.epochs,
            "text_cache": str(text_cache),
        },
        work,
    )
    common = {"device": device, "spec": spec, "model": str(bundle)}
    out = str(work / f"pred-{device}.parquet")
    predicted = run_stage("predict", {**common, "chunk_size": settings.chunk_size, "out": out}, work)
    patients = complete_patients(cohort, settings.explain_patients + 1)
    explained = run_stage("explain", {**common, "patients": patients, "steps": settings.explain_steps}, work)
    return trained, predicted, explained


def _analysis_rows(
    label: str, model: Path, cohort: Path, work: Path, settings: SpeedSettings, device: str, throughput: float
) -> list[dict[str, Any]]:
    from pipelines.bundles.loading import load_bundle
    from pipelines.cohorts.cohort_table import load_cohort

    bundle = load_bundle(model, device=device)
    forward, collation = prediction_flops(
        bundle, load_cohort(cohort / "cohort.yaml"), batches=settings.flop_batches
    )
    if device == "cpu":
        rates = matmul_rate("cpu", torch.float32, size=settings.matmul_size, repeats=settings.matmul_repeats)
        rate_metric = "fp32 matmul GFLOP/s (torch.mm ceiling)"
    else:
        rates = matmul_rate(device, torch.bfloat16, size=8192, repeats=settings.matmul_repeats, inner=10)
        rate_metric = "bf16 matmul GFLOP/s (torch.mm ceiling)"
    per_patient = statistics.fmean(forward) + statistics.fmean(collation)
    reached = per_patient * throughput / (statistics.fmean(rates) * 1e9)
    shares = profile_prediction(
        bundle, cohort / "cohort.yaml", work / f"profile-{device}.parquet", settings.profile_every
    )
    rows = [
        row(label, "model forward GFLOP per patient", [f / 1e9 for f in forward]),
        row(
            label, "batch collation GFLOP per patient (language model on notes)", [f / 1e9 for f in collation]
        ),
        row(label, rate_metric, rates),
        row(label, "share of the matmul ceiling reached by prediction", reached),
    ]
    rows += [
        row(f"{label}: {group}", "share of time (profiled prediction)", share)
        for group, share in shares.items()
    ]
    return rows


def run(quick: bool, work: Path) -> list[dict[str, Any]]:
    """The speed part of the benchmark suite: rows for ``benchmarks.suite`` (see the module docstring)."""
    from pipelines.sources.synth import generate_cohort

    settings = QUICK if quick else FULL
    work.mkdir(parents=True, exist_ok=True)
    cohort = work / f"cohort-{settings.patients}"
    if not (cohort / "ground_truth.json").is_file():  # written last: the cohort is complete
        generate_cohort(cohort, n=settings.patients, seed=0, missing_rate=0.2)
    model = work / "model-cpu"
    epochs = f"{settings.epochs} epochs" if settings.epochs else "demo epochs + early stopping"
    notes.info(
        f"synthetic cohort of {settings.patients} patients (20% missing per modality), "
        f"configs/demo.yaml, {epochs}; peak RSS of each stage in its own process"
    )
    label = "deepwe demo config, cpu"
    trained, predicted, explained = _stages("cpu", cohort, work, settings, bundle=model, train_into=model)
    rows = _device_rows(label, label, trained, predicted, explained, None)
    rows += _analysis_rows(
        label, model, cohort, work, settings, "cpu", predicted["rows"] / predicted["seconds"]
    )
    if not trained["epoch_seconds"]:
        notes.info("train() records no per-epoch times, so seconds per epoch is the whole run ÷ epochs")
    if not torch.cuda.is_available():
        notes.info("no CUDA GPU here; the GPU rows (bf16, speed-up over the CPU) are absent")
        return rows
    cpu = {r["metric"]: r["mean"] for r in rows}
    # Prediction and explanation on the GPU use the CPU-trained bundle: the same model on both devices.
    gpu = _stages("cuda", cohort, work, settings, bundle=model, train_into=work / "model-cuda")
    gpu_rows = _device_rows("deepwe demo config, cuda bf16", "deepwe demo config, cuda fp32", *gpu, cpu)
    g_predicted = gpu[1]
    gpu_rows += _analysis_rows(
        "deepwe demo config, cuda bf16",
        model,
        cohort,
        work,
        settings,
        "cuda",
        g_predicted["rows"] / g_predicted["seconds"],
    )
    speedups = []
    for r in gpu_rows:
        if r["metric"].startswith(("train seconds per epoch", "explain seconds per patient, median")):
            speedups.append(
                row(r["method"], f"speed-up over cpu: {r['metric']}", cpu[r["metric"]] / r["mean"])
            )
        elif r["metric"] == "predict patients/s, whole run":
            speedups.append(
                row(r["method"], f"speed-up over cpu: {r['metric']}", r["mean"] / cpu[r["metric"]])
            )
    return rows + gpu_rows + speedups


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "suite" / "speed")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="Only the PhysioNet 2012 files-to-risk part (benchmarks.throughput): predict cold and warm, "
        "gradient boosting, memory at 1,000 and 10,000 rows, training seconds per epoch.",
    )
    parser.add_argument("--before", type=Path, help="With --throughput: the code before, as the anchor.")
    parser.add_argument(
        "--before-cache",
        choices=("on", "off"),
        default="on",
        help="With --before: run that code with a decoded-file cache of its own (on) or without (off).",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "full" / "speed" / "throughput.json"
    )
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("payload", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        stage_args = json.loads(args.payload)
        result = STAGES[args.stage](stage_args)
        Path(stage_args["result"]).write_text(json.dumps(result))
        return
    if args.throughput:
        from benchmarks import throughput

        throughput.main(args.before, args.out, before_cache=args.before_cache == "on")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(args.quick, args.work), indent=1))


if __name__ == "__main__":
    main()
