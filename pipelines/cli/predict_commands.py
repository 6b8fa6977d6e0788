"""Commands that predict and keep the record: ``deepwe predict`` (local or Ray), ``merge`` of shard
outputs, and the ``audit`` group (verify, replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.rendering import (
    make_console,
    print_degraded,
)
from pipelines.cli.typer_app import EXIT_BAD_INPUT, EXIT_FAILED, app, handled_errors


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
    with handled_errors(spec, "predict", failed=(PredictAborted, OutputBusy, OutputWriteError, OSError)):
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


def _reading_workers(workers: int | None, device: str) -> int:
    """``--workers``, else one reading process per core but one; torch gets the cores they leave (CPU)."""
    from pipelines.common.parallelism import default_workers, torch_threads

    chosen = default_workers() if workers is None else workers
    if device != "cuda":
        import torch

        torch.set_num_threads(torch_threads(chosen))
    return chosen


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


@app.command()
def merge(
    shards: Annotated[
        list[Path], typer.Argument(help="The outputs of `deepwe predict --shard i/n`, one per shard.")
    ],
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")] = Path("predictions.parquet"),
) -> None:
    """Join shard outputs into one output in input order; refuses overlapping or missing rows.

    No model is needed: the shards of `deepwe predict --shard K/N` are read and concatenated.
    """
    _merge(shards, out)


def _merge(shards: list[Path], out: Path) -> None:
    from pipelines.inference.shards import merge_shards

    try:
        rows = merge_shards(shards, out)
    except (ValueError, OSError) as error:
        make_console(stderr=True).print(f"[red]cannot merge:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    make_console().print(f"merged {len(shards)} shard outputs ({rows} rows) into {out}")


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
