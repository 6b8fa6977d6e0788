"""The ``deepwe`` command line. Commands are thin: the work happens in the functions they call.

Exit codes: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.rendering import (
    make_console,
    print_degraded,
    print_files,
    print_problems,
    print_summary,
    print_training,
)
from pipelines.cohorts.validate import ValidationReport, validate_cohort

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="deepwe",
    help="DeepWe-MM: multi-modal clinical outcome prediction with weighted-embedding fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def _handled(
    spec: Path,
    verb: str,
    *,
    bad_input: tuple[type[Exception], ...] = (),
    failed: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Known errors become a message and an exit code: 2 for bad input (a spec problem table, or one
    line saying what cannot be done and why), 1 for a run that stopped (``failed``)."""
    from pipelines.bundles.bundle_io import BundleError
    from pipelines.cohorts.spec_io import SpecError

    try:
        yield
    except SpecError as error:
        print_problems(ValidationReport(spec_path=spec.resolve(), problems=error.problems), 200)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (BundleError, ValueError, FileNotFoundError, *bad_input) as error:
        make_console(stderr=True).print(f"[red]cannot {verb}:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except failed as error:
        make_console(stderr=True).print(f"[red]aborted:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to check.", show_default=False)],
    max_shown: Annotated[int, typer.Option(help="Most problems to print (all are counted).")] = 200,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the full report (every problem) as JSON here."),
    ] = None,
    skip_file_headers: Annotated[
        bool, typer.Option(help="Check that files exist but do not read their headers (faster).")
    ] = False,
) -> None:
    """Check a cohort (spec, table and every referenced file) and list every problem found.

    Exits 0 with a summary when the cohort is valid, 2 with a table of problems (row, column, value,
    what was expected) when it is not.
    """
    report = validate_cohort(spec, check_files=not skip_file_headers)
    if json_out is not None:
        _write_report_json(report, json_out)
    if not report.ok:
        print_problems(report, max_shown)
        print_files(report, stderr=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    print_summary(report)
    print_files(report)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the cohort into.")] = Path("runs/synth"),
    n: Annotated[int, typer.Option(help="Number of patients.", min=10)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same cohort.")] = 0,
    missing_rate: Annotated[
        float,
        typer.Option(help="Chance that each modality is missing for a patient.", min=0.0, max=0.95),
    ] = 0.2,
    signal_scale: Annotated[
        float,
        typer.Option(
            help="Multiply every modality's signal (2 = an easy outcome, for smoke tests).", min=0.01
        ),
    ] = 1.0,
) -> None:
    """Write a synthetic multimodal cohort in real file formats (DICOM, WAV, WFDB, CSV, text).

    Writes cohort.yaml, cohort.csv and ground_truth.json (which modalities and features carry
    signal, and each patient's latent state) into OUT.
    """
    from pipelines.sources.synth import generate_cohort

    started = time.perf_counter()
    with make_console(stderr=True).status(f"writing {n} synthetic patients to {out} ..."):
        result = generate_cohort(out, n=n, seed=seed, missing_rate=missing_rate, signal_scale=signal_scale)
    make_console().print(
        f"wrote {result.n} patients (outcome prevalence {result.prevalence:.1%}) to {result.spec_path} "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command("import")
def import_(
    name: Annotated[
        str,
        typer.Argument(
            help="physionet2012, cinc2017, medmnist, iu-xray, mimic-iv, fhir or omop.", show_default=False
        ),
    ],
    src: Annotated[
        str,
        typer.Argument(
            help="The dataset's folder (or .npz / .csv file); omop also takes a database URL "
            "(postgresql://user@host/cdm, sqlite:///cdm.db).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder to write cohort.yaml and its table into.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="cinc2017: 'af' (AF vs rest) or 'four' (N/A/O/~); mimic-iv, fhir, omop: a task YAML "
            "(index time, window, outcome, code -> modality; see docs/importers.md) instead of the built-in one."
        ),
    ] = None,
    limit_per_split: Annotated[
        int | None, typer.Option(help="medmnist: write at most this many images per split.")
    ] = None,
    cxr: Annotated[
        Path | None,
        typer.Option(help="mimic-iv: a MIMIC-CXR-JPG folder; the latest in-window X-ray becomes an image."),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="omop from a database URL: the CDM's schema, when not the default.")
    ] = None,
    check: Annotated[bool, typer.Option(help="Validate the written cohort (file headers not read).")] = True,
) -> None:
    """Convert a public dataset into a cohort (spec + table) that `deepwe validate` accepts.

    physionet2012 reads a folder laid out as set-*/NNNNNN.txt + Outcomes-*.txt (any set, or several);
    cinc2017 a folder of WFDB .hea/.mat records with REFERENCE.csv; medmnist an .npz file (images are
    written as PNG files); iu-xray indiana_reports.csv (notes are written as .txt files); mimic-iv a
    MIMIC-IV folder (hosp/, icu/, note/); fhir a folder of FHIR R4 Bundles (.json or .ndjson); omop an
    OMOP CDM 5.x folder of CSV tables, or the URL of a database holding them.
    """
    from pipelines.sources.importers import import_dataset
    from pipelines.sources.importers.database import is_database_url, shown_url

    options = {
        key: value
        for key, value in {
            "task": task,
            "limit_per_split": limit_per_split,
            "cxr": cxr,
            "schema": schema,
        }.items()
        if value is not None
    }
    source = src if is_database_url(src) else Path(src)
    try:
        with make_console(stderr=True).status(f"importing {name} from {shown_url(src)} ..."):
            result = import_dataset(name, source, out, **options)
    except ValueError as error:
        make_console(stderr=True).print(f"[red]cannot import:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console = make_console()
    console.print(f"wrote {result.rows} rows to {result.spec_path}")
    console.print("outcome: " + ", ".join(f"{k or '(blank)'}: {v}" for k, v in result.outcome_counts.items()))
    for reason, count in result.skipped.items():
        console.print(f"skipped {count}: {reason}")
    for note in result.notes:
        console.print(f"note: {note}")
    if check:
        report = validate_cohort(result.spec_path, check_files=False)
        if not report.ok:
            print_problems(report, 50)
            raise typer.Exit(EXIT_FAILED)
        console.print("[green]the cohort validates[/]")


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to train on.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder to write the model bundle into.")],
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file of training settings overriding the defaults (see configs/)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")
    ] = False,
    ensemble: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train this many models (seeds seed..seed+k-1) into one bundle that averages them; "
            "overrides the config's `ensemble`. Steadier risks for k times the training time.",
        ),
    ] = None,
) -> None:
    """Train a DeepWe model on a cohort and write a model bundle (safetensors + JSON, never a pickle).

    The cohort is validated first; a spec that fails `deepwe validate` stops here with the same report
    (exit 2). Uses the spec's split column, or a patient-level split drawn from the spec's seed.
    Under torchrun, every process trains its share and rank 0 writes the bundle.
    """
    from pipelines.cohorts.prepare import CohortError
    from pipelines.training.train import train as run_training
    from pipelines.training.train_config import TrainConfig

    _init_distributed()
    with _handled(spec, "train", bad_input=(CohortError,)):
        settings = TrainConfig.from_yaml(config) if config else TrainConfig()
        if ensemble is not None:
            settings = dataclasses.replace(settings, ensemble=ensemble)
        from pipelines.cohorts.decoded_cache import cache_counts

        before = dataclasses.replace(cache_counts())
        result = run_training(spec, out, settings, device=device, resume=resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return
    print_training(result, cache_counts().since(before))


@app.command()
def tune(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to tune on.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for best.yaml and trials.csv.")],
    trials: Annotated[int, typer.Option(min=1, help="Most trials to run.")] = 20,
    time_budget: Annotated[
        str | None, typer.Option(help="Stop starting trials after this long: 90s, 30m, 2h.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML of the settings that are not searched (epochs, encoders...)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when there is one), cpu or cuda.")] = "auto",
) -> None:
    """Search learning rate, widths, depth, dropout and the loss weights with Optuna (TPE).

    Every trial trains on the training split and is scored by its validation AUROC; the test split
    is never read. Writes OUT/best.yaml (for `deepwe train --config`) and OUT/trials.csv.
    """
    from pipelines.cohorts.prepare import CohortError
    from pipelines.training.train_config import TrainConfig
    from pipelines.training.tune import SEARCH_SPACE, parse_duration
    from pipelines.training.tune import tune as run_tuning

    console = make_console()
    with _handled(spec, "tune", bad_input=(CohortError,)):
        budget = parse_duration(time_budget) if time_budget else None
        base = TrainConfig.from_yaml(config) if config else TrainConfig()
        console.print("searching " + "; ".join(f"{k}: {v}" for k, v in SEARCH_SPACE.items()))

        def show(row: dict) -> None:
            console.print(
                f"trial {row['trial']}: val AUROC {row['val_auroc']:.4f}, log-loss {row['val_log_loss']:.4f} "
                f"({row['epochs']} epochs, {row['seconds']:.0f} s)"
            )

        result = run_tuning(
            spec, out, base, trials=trials, time_budget_s=budget, device=device, on_trial=show
        )
    console.print(
        f"best of {result.trials} trials: val AUROC {result.best['val_auroc']:.4f}; "
        f"settings: {result.best_config}; every trial: {result.trials_table}"
    )


def _init_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


@app.command()
def predict(
    model: Annotated[Path | None, typer.Argument(help="The model bundle folder.", show_default=False)] = None,
    spec: Annotated[
        Path | None, typer.Argument(help="The cohort spec (YAML) to predict.", show_default=False)
    ] = None,
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")] = Path("predictions.parquet"),
    on_bad_file: Annotated[
        str,
        typer.Option(help="missing: predict without an unreadable modality; error: make the row an error."),
    ] = "missing",
    max_errors: Annotated[
        int | None, typer.Option(help="Abort cleanly once more rows than this are errors.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its last finished chunk.")
    ] = False,
    shard: Annotated[
        str | None, typer.Option(help="i/n: predict only shard i of n (rows with position % n == i).")
    ] = None,
    merge: Annotated[
        list[Path] | None,
        typer.Option(help="Deprecated: use `deepwe merge`."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Patients per forward pass.", min=1)] = 64,
    chunk_size: Annotated[int, typer.Option(help="Rows per checkpointed chunk.", min=1)] = 256,
    workers: Annotated[
        int | None,
        typer.Option(
            help="local engine: DataLoader worker processes reading files (default: one per core but "
            "one, 0 on a single core = in the main process); ray engine: Ray workers, each holding the "
            "model (default 2).",
            min=0,
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (Ray workers; pip install 'deepwe-mm[ray]').")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="ray engine: the cluster to join (default: start a local one).")
    ] = None,
    cpus_per_worker: Annotated[
        float, typer.Option(help="ray engine: CPUs reserved per Ray worker (fractions allowed).", min=0.01)
    ] = 1.0,
    gpus_per_worker: Annotated[
        float, typer.Option(help="ray engine: GPUs per Ray worker (above 0 predicts on the GPU).", min=0.0)
    ] = 0.0,
    audit_log: Annotated[
        Path | None, typer.Option(help="Append one hash-chained JSONL record per prediction to this log.")
    ] = None,
    allow_missing_share: Annotated[
        float,
        typer.Option(
            help="Exit 1 (the output is still written) when more than this share of rows lose a "
            "modality because its file failed.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.1,
) -> None:
    """Batch prediction: one output row per input row, in input order, errors captured per row.

    Each row has status ok/error, the calibrated risk and the label at the model's threshold, modality
    presence and weights, the top feature weights, the most similar reference patients, an
    out-of-distribution flag and score, and the sha256 of the model and of the row's input. A bad file
    fails its modality, not the job. The output is written to a temporary file and renamed when
    complete; after a crash, --resume continues from the last finished chunk.

    --engine ray predicts the same chunks on Ray workers (a local cluster, or --ray-address) and
    writes the same output; the driver keeps the audit log, --max-errors and --resume.
    """
    from pipelines.inference.partial_lock import OutputBusy
    from pipelines.inference.predict import OutputWriteError, PredictAborted
    from pipelines.inference.shards import parse_shard

    console = make_console()
    if merge:
        make_console(stderr=True).print(
            "notice: `deepwe predict --merge` will be removed in the next release; use "
            "`deepwe merge SHARD... --out OUT`"
        )
        _merge(merge, out)
        return
    if model is None or spec is None:
        make_console(stderr=True).print("[red]predict needs MODEL and SPEC[/]")
        raise typer.Exit(EXIT_BAD_INPUT)
    from pipelines.bundles.loading import load_bundle
    from pipelines.common.devices import pick_device
    from pipelines.inference.batching import PredictOptions
    from pipelines.inference.predict import predict_cohort

    if engine not in ("local", "ray"):
        make_console(stderr=True).print(
            f"[red]cannot predict:[/] --engine must be local or ray, got {engine!r}"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    with _handled(spec, "predict", failed=(PredictAborted, OutputBusy, OutputWriteError, OSError)):
        chunk_engine, bundle = None, None
        if engine == "ray":
            chunk_engine, bundle = _ray_engine(
                model, ray_address, 2 if workers is None else workers, cpus_per_worker, gpus_per_worker
            )
        options = PredictOptions(
            on_bad_file=on_bad_file,
            max_errors=max_errors,
            shard=parse_shard(shard) if shard else None,
            batch_size=batch_size,
            chunk_size=chunk_size,
            num_workers=0 if engine == "ray" else _reading_workers(workers, device),
        )
        bundle = bundle or load_bundle(model, device=pick_device(device))
        log = _audit_hook(audit_log, bundle)
        summary = predict_cohort(
            bundle, spec, out, options, resume=resume, on_records=log, engine=chunk_engine
        )
    console.print(
        f"{summary.rows} rows -> {summary.output}: {summary.ok} ok, {summary.errors} error"
        f" ({summary.rows_per_second:.1f} patients/s"
        + (f"; {summary.resumed_chunks} chunks resumed" if summary.resumed_chunks else "")
        + ")"
    )
    for reason, count in sorted(summary.error_reasons.items(), key=lambda kv: -kv[1]):
        console.print(f"  {count:6d}  {reason}")
    print_degraded(summary)
    too_many = summary.too_many_missing(allow_missing_share)
    for line in too_many:
        make_console(stderr=True).print(f"[red]failed:[/] {line}; the output is complete in {summary.output}")
    if too_many:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def merge(
    shards: Annotated[
        list[Path], typer.Argument(help="The outputs of `deepwe predict --shard i/n`, one per shard.")
    ],
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")] = Path("predictions.parquet"),
) -> None:
    """Join shard outputs into one output in input order (no model needed); refuses shards that
    overlap or leave gaps."""
    _merge(shards, out)


def _merge(shards: list[Path], out: Path) -> None:
    from pipelines.inference.shards import merge_shards

    try:
        rows = merge_shards(shards, out)
    except (ValueError, OSError) as error:
        make_console(stderr=True).print(f"[red]cannot merge:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    make_console().print(f"merged {len(shards)} shard outputs ({rows} rows) into {out}")


def _reading_workers(workers: int | None, device: str) -> int:
    """``--workers``, else one reading process per core but one; torch gets the cores they leave (CPU)."""
    from pipelines.common.parallelism import default_workers, torch_threads

    chosen = default_workers() if workers is None else workers
    if device != "cuda":
        import torch

        torch.set_num_threads(torch_threads(chosen))
    return chosen


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[
        Path, typer.Argument(help="The cohort spec (YAML) holding the patient.", show_default=False)
    ],
    patient: Annotated[str, typer.Option(help="The patient id (the spec's id column).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for explanation.json and the pictures.")] = Path(
        "explanation"
    ),
    steps: Annotated[int, typer.Option(help="Integrated Gradients steps.", min=2)] = 32,
    faithfulness: Annotated[
        bool, typer.Option(help="Also compute deletion/insertion curves against random orders.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Explain one patient's prediction: attributions, modality Shapley values, the model's weights.

    Attributions per modality and per token (Integrated Gradients with their completeness error),
    exact Shapley values of the present modalities, and the model's own weights next to them.

    Writes explanation.json and pictures into --out: contributions.png (Shapley values and modality
    weights), one picture per present modality (tabular bars, image saliency overlay, sensor plot
    with attribution shading, spectrogram with attribution, note with highlighted words as HTML).
    Every Integrated Gradients result carries its completeness error.
    """
    from pipelines.bundles.loading import load_bundle
    from pipelines.common.devices import pick_device
    from pipelines.explanations.explaining import UnknownPatient, explain_patient
    from pipelines.explanations.explanation_files import write_explanation
    from pipelines.inference.batching import compatible_cohort

    console = make_console()
    with _handled(spec, "explain", bad_input=(UnknownPatient,)):
        bundle = load_bundle(model, device=pick_device(device))
        cohort = compatible_cohort(bundle, spec)
        started = time.perf_counter()
        explanation = explain_patient(bundle, cohort, patient, steps=steps, faithfulness=faithfulness)
        seconds = time.perf_counter() - started
        files = write_explanation(explanation, bundle, out)
    record = explanation.prediction
    shown = f"risk {record.risk:.3f}" if record.risk is not None else f"label {record.label}"
    console.print(
        f"{shown} ({explanation.score_name} {explanation.score:+.3f}); explained in {seconds:.1f} s"
    )
    table = Table("modality", "Shapley (risk)", "weight", "IG completeness error", "weights vs attributions")
    for name, value in explanation.shapley.items():
        item = explanation.modalities.get(name)
        table.add_row(
            name,
            f"{value:+.4f}",
            f"{record.modality_weights.get(name, 0.0):.3f}",
            "absent" if item is None else f"{item.delta:+.2e} ({item.relative_delta:.1%})",
            "" if item is None or item.agreement != item.agreement else f"rho {item.agreement:+.2f}",
        )
    console.print(table)
    console.print(
        f"Shapley values sum to {sum(explanation.shapley.values()):+.4f} = risk - base rate "
        f"{explanation.base_value:.3f}; {len(files)} files in {out}"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) with outcomes.", show_default=False)],
    predictions: Annotated[
        Path | None, typer.Option(help="Output of deepwe predict for this cohort (else predicted now).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val, test or all.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
    out: Annotated[Path | None, typer.Option(help="Write every figure as JSON here.")] = None,
) -> None:
    """Metrics with bootstrap intervals, calibration, decision curve and threshold of a labelled cohort.

    AUROC and AUPRC with 95% bootstrap intervals overall, per subgroup of the spec and per
    missing-modality pattern; calibration before and after temperature scaling (ECE, Brier, slope,
    intercept); decision curve; the threshold's confusion matrix.
    """
    from pipelines import api
    from pipelines.bundles.loading import load_bundle
    from pipelines.evaluation.evaluation import format_interval
    from pipelines.inference.batching import compatible_cohort
    from pipelines.inference.output_table import read_predictions

    console = make_console()
    with _handled(spec, "evaluate"):
        bundle = load_bundle(model)
        cohort = compatible_cohort(bundle, spec)
        table = None
        if predictions is not None:
            table = read_predictions(predictions)
            stale = table.loc[table["status"] == "ok", "model_sha256"].ne(bundle.sha256)
            if stale.any():
                raise ValueError(f"{predictions}: {int(stale.sum())} rows were predicted by another model")
        result = api.evaluate(
            bundle,
            api.compatible(bundle, cohort),
            predictions=table,
            split=None if split == "all" else split,
            n_boot=n_boot,
        )
    console.print(
        f"{result.n} patients ({result.split or 'all labelled rows'}): AUROC {format_interval(result.auroc)}, "
        f"AUPRC {format_interval(result.auprc)}"
    )
    for name, calibration in result.calibration.items():
        console.print(
            f"calibration {name}: ECE {calibration.ece:.3f}, Brier {calibration.brier:.3f}, "
            f"slope {calibration.slope:.2f}, intercept {calibration.intercept:+.2f}"
        )
    if result.threshold is not None:
        t = result.threshold
        console.print(
            f"threshold {t.threshold:.3f}: sensitivity {t.sensitivity:.3f}, specificity {t.specificity:.3f}"
        )
    for note in result.notes:
        console.print(f"note: {note}")
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"written to {out}")


@app.command()
def report(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) with outcomes.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The HTML report to write.")] = Path("report.html"),
    pdf: Annotated[bool, typer.Option(help="Also write the same report as PDF beside it.")] = False,
    predictions: Annotated[
        Path | None, typer.Option(help="Output of deepwe predict for this cohort (else predicted now).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val, test or all.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
    faithfulness_patients: Annotated[
        int, typer.Option(help="Patients explained for the faithfulness figures.", min=1)
    ] = 8,
    steps: Annotated[int, typer.Option(help="Integrated Gradients steps per explanation.", min=2)] = 32,
) -> None:
    """The model audit report: one self-contained HTML file (inline images, no network fetches).

    Sections: intended use and model card; data (size, outcome balance, missingness); discrimination
    with bootstrap intervals overall, per subgroup and per missing-modality pattern; calibration
    before and after temperature scaling; decision curve and threshold; modality ablation and
    Shapley contributions; global weights; faithfulness; three pseudonymous examples; limitations;
    and a table mapping sections to TRIPOD+AI items.
    """
    from pipelines.bundles.loading import load_bundle
    from pipelines.inference.batching import compatible_cohort
    from pipelines.inference.output_table import read_predictions
    from pipelines.reports.audit_report import build_report, write_report
    from pipelines.reports.report_inputs import gather

    console = make_console()
    started = time.perf_counter()
    with _handled(spec, "report"):
        bundle = load_bundle(model)
        cohort = compatible_cohort(bundle, spec)
        given = read_predictions(predictions) if predictions is not None else None
        inputs = gather(
            bundle,
            cohort,
            predictions=given,
            split=None if split == "all" else split,
            n_boot=n_boot,
            faithfulness_patients=faithfulness_patients,
            steps=steps,
            progress=lambda step: console.print(f"… {step}"),
        )
        html_path, pdf_path, pages = write_report(build_report(inputs), out, pdf=pdf)
    console.print(
        f"report for {inputs.evaluation.n} patients -> {html_path}"
        + (f" and {pdf_path} ({pages} pages)" if pdf_path else "")
        + f" in {time.perf_counter() - started:.0f} s"
    )


DASHBOARD_SETTINGS = {
    "server.headless": "true",
    "server.enableXsrfProtection": "true",
    "server.enableCORS": "true",
    "server.maxUploadSize": "50",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
    "client.showErrorLinks": "false",
    "runner.magicEnabled": "false",
    "browser.gatherUsageStats": "false",
}
"""The settings of .streamlit/config.toml as flags: Streamlit reads that file only from its working folder."""


def dashboard_command(model: Path, spec: Path, predictions: Path | None, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line of the dashboard (the script is found, never imported)."""
    import importlib.util

    found = importlib.util.find_spec("app")
    script = Path(found.origin).parent / "dashboard.py" if found and found.origin else None
    if script is None or not script.is_file():
        raise FileNotFoundError("the dashboard (app/dashboard.py of deepwe-mm) is not installed")
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.port", str(port), "--server.address", host]
    for key, value in DASHBOARD_SETTINGS.items():
        command += [f"--{key}", value]
    command += ["--", "--model", str(model.resolve()), "--cohort", str(spec.resolve())]
    if predictions is not None:
        command += ["--predictions", str(predictions.resolve())]
    return command


@app.command()
def dashboard(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to show.", show_default=False)],
    predictions: Annotated[
        Path | None,
        typer.Option(help="A `deepwe predict` output of this cohort; computed once per server when absent."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8501,
    host: Annotated[
        str,
        typer.Option(
            help="Address to bind. 127.0.0.1 serves this machine only; put authentication in front "
            "before binding wider (docs/cli.md: Dashboard)."
        ),
    ] = "127.0.0.1",
) -> None:
    """The Streamlit clinician dashboard: cohort, patient explanations, model audit, batch prediction.

    Runs until stopped (Ctrl+C). The model and the cohort load once per server; each browser session
    keeps its own explanations.
    """
    problems = []
    if not (model / "manifest.json").is_file():
        problems.append(f"{model}: not a model bundle (no manifest.json)")
    if not spec.is_file():
        problems.append(f"{spec}: no such cohort spec")
    if predictions is not None and not predictions.is_file():
        problems.append(
            f"{predictions}: no such predictions file (run `deepwe predict` first, or leave out --predictions)"
        )
    for problem in problems:
        make_console(stderr=True).print(f"[red]cannot start the dashboard:[/] {problem}")
    if problems:
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        command = dashboard_command(model, spec, predictions, port, host)
    except FileNotFoundError as error:
        make_console(stderr=True).print(f"[red]cannot start the dashboard:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None
    make_console().print(f"dashboard: http://{host}:{port}  (Ctrl+C stops it)")
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":  # streamlit replaces this process: Ctrl+C and SIGTERM reach it directly
        os.execv(sys.executable, command)
    raise typer.Exit(subprocess.call(command))


def _ray_engine(
    model: Path, address: str | None, workers: int, cpus_per_worker: float, gpus_per_worker: float
):
    """The Ray engine with these settings and the driver's bundle (verified; the workers load the
    model); without the ``ray`` extra, one line saying how to install it."""
    try:
        from pipelines.inference.ray_engine import RayEngine, RaySettings, driver_bundle
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        make_console(stderr=True).print(
            "[red]cannot predict:[/] --engine ray needs Ray: pip install 'deepwe-mm\\[ray]'"
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None
    return RayEngine(RaySettings(address, workers, cpus_per_worker, gpus_per_worker)), driver_bundle(model)


def _audit_hook(path: Path | None, bundle):
    """A callback appending each finished chunk's predictions to the audit log, or None."""
    if path is None:
        return None
    import getpass

    from pipelines.audit.audit_log import AuditLog
    from pipelines.bundles.bundle_io import code_version
    from pipelines.inference.batching import token_modalities

    log, user, version = AuditLog(path), getpass.getuser(), code_version()
    hidden = token_modalities(bundle)
    return lambda records, batch: log.append(
        records, user=user, code_version=version, redact_tokens=hidden, batch=batch
    )


@app.callback()
def _everywhere(
    cache_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder of the decoded-file cache shared by every command ('off' to read every file "
            "afresh). Default: $DEEPWE_CACHE_DIR, else ~/.cache/deepwe.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Options that hold for every command (give them before the command's name)."""
    if cache_dir is not None:
        os.environ["DEEPWE_CACHE_DIR"] = cache_dir  # DataLoader workers and child processes see it too


cache_app = typer.Typer(help="The decoded-file cache (see deepwe --cache-dir).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache_or_say_off():
    """The decoded-file cache, or None after saying that it is off."""
    from pipelines.cohorts.decoded_cache import process_cache

    cache = process_cache()
    if cache is None:
        make_console().print("the decoded-file cache is off (--cache-dir off or DEEPWE_CACHE_DIR=off)")
    return cache


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every decoded file kept in the cache folder."""
    cache = _cache_or_say_off()
    if cache is not None:
        make_console().print(f"removed {cache.clear()} decoded files from {cache.folder}")


@cache_app.command("info")
def cache_info() -> None:
    """Where the cache is, how much it holds and its size bound."""
    cache = _cache_or_say_off()
    if cache is not None:
        megabytes = cache.size_bytes() / 1e6
        make_console().print(f"{cache.folder}: {megabytes:.1f} MB of at most {cache.max_bytes / 1e6:.0f} MB")


export_app = typer.Typer(help="Export a model bundle for other platforms.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
def export_mlflow_command(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The MLflow model folder to write (must not exist).")],
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Folder that file cells of served rows are relative to (default: the working folder "
            "of the process serving the model)."
        ),
    ] = None,
) -> None:
    """Write the bundle as an MLflow pyfunc model (models from code: no pickle; the bundle is an
    artifact verified on load). Serve it with `mlflow models serve -m OUT --env-manager local`.

    Input: a DataFrame of cohort rows (the model's id and modality columns); output: the prediction
    table of `deepwe predict`. Files that rows name must be readable where the model is served.
    """
    try:
        from pipelines.inference.mlflow_export import export_mlflow
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "mlflow":
            raise
        make_console(stderr=True).print(
            "[red]cannot export:[/] export mlflow needs MLflow: pip install 'deepwe-mm\\[mlflow]'"
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None
    from pipelines.bundles.bundle_io import BundleError

    try:
        written = export_mlflow(model, out, data_root=data_root)
    except (BundleError, FileExistsError) as error:
        make_console(stderr=True).print(f"[red]cannot export:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    make_console().print(
        f"MLflow model -> {written} (serve: mlflow models serve -m {written} --env-manager local)"
    )


audit_app = typer.Typer(help="Check and replay the prediction audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
    predictions: Annotated[
        Path | None,
        typer.Option(help="A deepwe predict output: also check that every row it delivered is logged."),
    ] = None,
) -> None:
    """Check the hash chain of an audit log: an edited, removed or reordered record is reported by line.

    Also checks the log against its head file (<log>.head, written by every append), so records
    removed from the end are reported; with DEEPWE_AUDIT_KEY set, the head's HMAC too. Exits 0 when
    intact, 1 when not. Prints the head (last sequence and hash): store it elsewhere as well.
    """
    from pipelines.audit.audit_log import unlogged, verify_log

    if not log.is_file():
        make_console(stderr=True).print(f"[red]no such audit log:[/] {log}")
        raise typer.Exit(EXIT_BAD_INPUT)
    result = verify_log(log)
    errors = make_console(stderr=True)
    missing: list[int] = []
    if predictions is not None:
        from pipelines.inference.output_table import read_predictions, row_to_record

        try:
            delivered = [row_to_record(r) for r in read_predictions(predictions).to_dict("records")]
        except (OSError, ValueError) as error:
            errors.print(f"[red]cannot read the predictions:[/] {predictions}: {type(error).__name__}")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        missing = unlogged(log, delivered)
    for problem in result.problems:
        errors.print(problem)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        errors.print(f"{len(missing)} delivered rows of {predictions} are not in the log: rows {shown}")
    if result.ok and not missing:
        checked = f"; all {len(delivered)} delivered rows logged" if predictions is not None else ""
        make_console().print(
            f"[green]intact[/]: {result.records} records; head {result.head_sequence} {result.head_hash}"
            + checked
        )
        return
    errors.print(f"[red]the audit log is not intact[/] ({len(result.problems) + bool(missing)} problem(s))")
    raise typer.Exit(EXIT_FAILED)


@audit_app.command("replay")
def audit_replay(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
    sequence: Annotated[int, typer.Option(help="The record to replay.")],
    model: Annotated[Path, typer.Option(help="The model bundle the record names (its sha256 must match).")],
    spec: Annotated[Path, typer.Option(help="The cohort spec holding the patient's row.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Reproduce one logged prediction exactly: same model, same input (checked by sha256), same output."""
    from pipelines.audit.audit_replay import replay_record

    try:
        same, message = replay_record(log, sequence, model, spec, device=device)
    except (ValueError, FileNotFoundError) as error:
        make_console(stderr=True).print(f"[red]cannot replay:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not same:
        make_console(stderr=True).print(f"[red]not reproduced:[/] {message}")
        raise typer.Exit(EXIT_FAILED)
    make_console().print(f"[green]reproduced[/]: {message}")


def _write_report_json(report: ValidationReport, path: Path) -> None:
    payload = {
        "spec": str(report.spec_path),
        "ok": report.ok,
        "problems": [p.model_dump() for p in report.problems],
        "summary": report.summary.as_dict() if report.summary else None,
        "files": report.files.as_dict(),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    n: Annotated[int, typer.Option(help="Number of synthetic patients.", min=10)] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """The embedded default: synthetic cohort -> validate -> train a model bundle -> predict -> report.

    Uses the small settings of configs/demo.yaml; a few minutes on 2 CPU cores.
    """
    from pipelines.cli.demo import run_demo

    if not run_demo(out, n=n, seed=seed, device=device):
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    """Entry point of the ``deepwe`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        make_console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
