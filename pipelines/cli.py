"""The ``deepwe`` command line. Commands are thin: the work happens in the functions they call.

Exit codes: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.validate import ValidationReport, validate_cohort

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

app = typer.Typer(
    name="deepwe",
    help="DeepWe-MM: multi-modal clinical outcome prediction with weighted-embedding fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(stderr: bool = False) -> Console:
    """A console for the current streams; wide when the output is a file or a pipe, not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 160)


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
        raise typer.Exit(EXIT_BAD_INPUT)
    print_summary(report)


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
    from pipelines.synth import generate_cohort

    started = time.perf_counter()
    with _console(stderr=True).status(f"writing {n} synthetic patients to {out} ..."):
        result = generate_cohort(out, n=n, seed=seed, missing_rate=missing_rate, signal_scale=signal_scale)
    _console().print(
        f"wrote {result.n} patients (outcome prevalence {result.prevalence:.1%}) to {result.spec_path} "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command("import")
def import_(
    name: Annotated[
        str, typer.Argument(help="physionet2012, cinc2017, medmnist or iu-xray.", show_default=False)
    ],
    src: Annotated[
        Path, typer.Argument(help="The dataset's folder (or .npz / .csv file).", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Folder to write cohort.yaml and its table into.")],
    task: Annotated[str | None, typer.Option(help="cinc2017: 'af' (AF vs rest) or 'four' (N/A/O/~).")] = None,
    limit_per_split: Annotated[
        int | None, typer.Option(help="medmnist: write at most this many images per split.")
    ] = None,
    check: Annotated[bool, typer.Option(help="Validate the written cohort (file headers not read).")] = True,
) -> None:
    """Convert a public dataset into a cohort (spec + table) that `deepwe validate` accepts.

    physionet2012 reads a folder laid out as set-*/NNNNNN.txt + Outcomes-*.txt (any set, or several);
    cinc2017 a folder of WFDB .hea/.mat records with REFERENCE.csv; medmnist an .npz file (images are
    written as PNG files); iu-xray indiana_reports.csv (notes are written as .txt files).
    """
    from pipelines.importers import import_dataset

    options = {
        key: value
        for key, value in {"task": task, "limit_per_split": limit_per_split}.items()
        if value is not None
    }
    try:
        with _console(stderr=True).status(f"importing {name} from {src} ..."):
            result = import_dataset(name, src, out, **options)
    except ValueError as error:
        _console(stderr=True).print(f"[red]cannot import:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console = _console()
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
) -> None:
    """Train a DeepWe model on a cohort and write a model bundle (safetensors + JSON, never a pickle).

    The cohort is validated first; a spec that fails `deepwe validate` stops here with the same report
    (exit 2). Uses the spec's split column, or a patient-level split drawn from the spec's seed.
    Under torchrun, every process trains its share and rank 0 writes the bundle.
    """
    from pipelines.prepare import CohortError
    from pipelines.spec_io import SpecError
    from pipelines.train import train as run_training
    from pipelines.train_config import TrainConfig

    _init_distributed()
    try:
        settings = TrainConfig.from_yaml(config) if config else TrainConfig()
        result = run_training(spec, out, settings, device=device, resume=resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return
    except SpecError as error:
        print_problems(ValidationReport(spec_path=spec.resolve(), problems=error.problems), 200)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (CohortError, ValueError, FileNotFoundError) as error:
        _console(stderr=True).print(f"[red]cannot train:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _print_training(result)


def _init_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _print_training(result) -> None:
    console = _console()
    metrics = result.metrics
    console.print(
        f"trained {result.epochs_run} epochs (best {metrics['best_epoch']}) in {result.seconds:.0f} s; "
        f"bundle: {result.bundle}"
    )
    for split in ("val", "test"):
        if split in metrics:
            shown = ", ".join(
                f"{k} {v:.3f}" for k, v in metrics[split].items() if k in ("auroc", "auprc", "brier", "ece")
            )
            console.print(f"{split}: {shown} (n={metrics[split]['n']})")


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
        typer.Option(help="Join these shard outputs into --out in input order (no model needed)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Patients per forward pass.", min=1)] = 64,
    chunk_size: Annotated[int, typer.Option(help="Rows per checkpointed chunk.", min=1)] = 256,
    audit_log: Annotated[
        Path | None, typer.Option(help="Append one hash-chained JSONL record per prediction to this log.")
    ] = None,
) -> None:
    """Batch prediction: one output row per input row, in input order, errors captured per row.

    Each row has status ok/error, the calibrated risk and the label at the model's threshold, modality
    presence and weights, the top feature weights, the most similar reference patients, an
    out-of-distribution flag and score, and the sha256 of the model and of the row's input. A bad file
    fails its modality, not the job. The output is written to a temporary file and renamed when
    complete; after a crash, --resume continues from the last finished chunk.
    """
    from pipelines.predict import PredictAborted, merge_shards, parse_shard

    console = _console()
    if merge:
        try:
            rows = merge_shards(merge, out)
        except (ValueError, OSError) as error:
            _console(stderr=True).print(f"[red]cannot merge:[/] {error}")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        console.print(f"merged {len(merge)} shard outputs ({rows} rows) into {out}")
        return
    if model is None or spec is None:
        _console(stderr=True).print("[red]predict needs MODEL and SPEC (or --merge with shard outputs)[/]")
        raise typer.Exit(EXIT_BAD_INPUT)
    from pipelines.bundle import BundleError
    from pipelines.loading import load_bundle
    from pipelines.predict import PredictOptions, predict_cohort
    from pipelines.spec_io import SpecError
    from pipelines.train import pick_device

    try:
        options = PredictOptions(
            on_bad_file=on_bad_file,
            max_errors=max_errors,
            shard=parse_shard(shard) if shard else None,
            batch_size=batch_size,
            chunk_size=chunk_size,
        )
        bundle = load_bundle(model, device=pick_device(device))
        log = _audit_hook(audit_log, bundle)
        summary = predict_cohort(bundle, spec, out, options, resume=resume, on_records=log)
    except SpecError as error:
        print_problems(ValidationReport(spec_path=spec.resolve(), problems=error.problems), 200)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (BundleError, ValueError, FileNotFoundError) as error:
        _console(stderr=True).print(f"[red]cannot predict:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except PredictAborted as error:
        _console(stderr=True).print(f"[red]aborted:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        f"{summary.rows} rows -> {summary.output}: {summary.ok} ok, {summary.errors} error"
        f" ({summary.rows_per_second:.1f} patients/s"
        + (f"; {summary.resumed_chunks} chunks resumed" if summary.resumed_chunks else "")
        + ")"
    )
    for reason, count in sorted(summary.error_reasons.items(), key=lambda kv: -kv[1]):
        console.print(f"  {count:6d}  {reason}")


def _audit_hook(path: Path | None, bundle):
    """A callback appending each finished chunk's predictions to the audit log, or None."""
    if path is None:
        return None
    import getpass

    from pipelines.audit import AuditLog
    from pipelines.bundle import code_version
    from pipelines.predict import token_modalities

    log, user, version = AuditLog(path), getpass.getuser(), code_version()
    hidden = token_modalities(bundle)
    return lambda records: log.append(records, user=user, code_version=version, redact_tokens=hidden)


audit_app = typer.Typer(help="Check and replay the prediction audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
) -> None:
    """Check the hash chain of an audit log: an edited, removed or reordered record is reported by line.

    Exits 0 when intact, 1 when not. Prints the head (last sequence and hash): store it elsewhere to
    also detect records removed from the end.
    """
    from pipelines.audit import verify_log

    if not log.is_file():
        _console(stderr=True).print(f"[red]no such audit log:[/] {log}")
        raise typer.Exit(EXIT_BAD_INPUT)
    result = verify_log(log)
    console = _console()
    if result.ok:
        console.print(
            f"[green]intact[/]: {result.records} records; head {result.head_sequence} {result.head_hash}"
        )
        return
    for problem in result.problems:
        _console(stderr=True).print(problem)
    _console(stderr=True).print(f"[red]the audit log is not intact[/] ({len(result.problems)} problem(s))")
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
    from pipelines.audit_replay import replay_record

    try:
        same, message = replay_record(log, sequence, model, spec, device=device)
    except (ValueError, FileNotFoundError) as error:
        _console(stderr=True).print(f"[red]cannot replay:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not same:
        _console(stderr=True).print(f"[red]not reproduced:[/] {message}")
        raise typer.Exit(EXIT_FAILED)
    _console().print(f"[green]reproduced[/]: {message}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    n: Annotated[int, typer.Option(help="Number of synthetic patients.", min=10)] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """The embedded default: synthetic cohort -> validate -> train a model bundle -> predict.

    Uses the small settings of configs/demo.yaml; a few minutes on 2 CPU cores.
    """
    from pipelines.synth import generate_cohort
    from pipelines.train import train as run_training
    from pipelines.train_config import TrainConfig

    console = _console()
    console.rule("1. synthetic cohort")
    started = time.perf_counter()
    result = generate_cohort(out / "cohort", n=n, seed=seed)
    console.print(f"wrote {result.n} patients to {result.spec_path} in {time.perf_counter() - started:.1f} s")
    console.rule("2. validate")
    report = validate_cohort(result.spec_path)
    if not report.ok:
        print_problems(report, 50)
        raise typer.Exit(EXIT_FAILED)
    print_summary(report)
    console.rule("3. train")
    config = TrainConfig.from_yaml(DEMO_CONFIG) if DEMO_CONFIG.is_file() else TrainConfig(epochs=6)
    trained = run_training(result.spec_path, out / "model", config, device=device)
    _print_training(trained)
    console.rule("4. predict")
    from pipelines.loading import load_bundle
    from pipelines.predict import predict_cohort

    predictions = out / "predictions.parquet"
    summary = predict_cohort(load_bundle(trained.bundle), result.spec_path, predictions)
    console.print(
        f"{summary.rows} rows -> {predictions}: {summary.ok} ok, {summary.errors} error "
        f"({summary.rows_per_second:.1f} patients/s)"
    )
    console.print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; model bundle in {trained.bundle}"
    )


def print_problems(report: ValidationReport, max_shown: int) -> None:
    """A table of problems on stderr: file, row or line, column, value, expected."""
    table = Table(title=f"{len(report.problems)} problem(s) in {report.spec_path}", show_lines=False)
    for header in ("file", "row", "column", "value", "expected"):
        table.add_column(header, overflow="fold")
    base = report.spec_path.parent
    for problem in report.problems[:max_shown]:
        where = "" if problem.row is None else str(problem.row)
        if problem.line is not None:
            where = f"line {problem.line}"
        table.add_row(
            _relative(problem.file, base),
            where,
            problem.column or "",
            problem.value or "",
            problem.expected,
        )
    _console(stderr=True).print(table)
    if len(report.problems) > max_shown:
        _console(stderr=True).print(
            f"... and {len(report.problems) - max_shown} more (use --max-shown or --json)"
        )


def print_summary(report: ValidationReport) -> None:
    summary = report.summary
    if summary is None:
        raise ValueError("print_summary needs the report of a valid cohort")
    console = _console()
    console.print(f"[bold green]valid[/] cohort {report.spec_path}: {summary.rows} rows")
    if summary.outcome_counts:
        balance = ", ".join(
            f"{label}: {count} ({count / summary.rows:.1%})"
            for label, count in summary.outcome_counts.items()
        )
        console.print(f"outcome: {balance}; unlabelled: {summary.unlabelled}")
    console.print("split: " + ", ".join(f"{k}: {v}" for k, v in summary.split_counts.items()))
    table = Table(title="availability per modality")
    table.add_column("modality")
    table.add_column("present", justify="right")
    table.add_column("%", justify="right")
    for name, count in summary.availability.items():
        table.add_row(name, str(count), f"{count / summary.rows:.1%}")
    console.print(table)
    patterns = Table(title="most common modality patterns")
    patterns.add_column("present modalities")
    patterns.add_column("rows", justify="right")
    for pattern, count in summary.patterns:
        patterns.add_row(pattern, str(count))
    console.print(patterns)


def _write_report_json(report: ValidationReport, path: Path) -> None:
    payload = {
        "spec": str(report.spec_path),
        "ok": report.ok,
        "problems": [p.model_dump() for p in report.problems],
        "summary": report.summary.as_dict() if report.summary else None,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _relative(file: str, base: Path) -> str:
    try:
        return str(Path(file).relative_to(base))
    except ValueError:
        return file


def main() -> None:
    """Entry point of the ``deepwe`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
