"""``deepwe predict``: batch prediction that never loses a row, the resumable chunk runner.

One output row per input row, in input order, with status ``ok`` or ``error`` and a reason that names
the modality and the problem but no patient data. Work is done in chunks: each finished chunk is
written to ``<output>.partial/``, so a killed run resumes (``--resume``) from the last finished
chunk; the final file is written to a temporary name beside the output and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from data_schemas import PredictionRecord
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.inference import partial_lock
from pipelines.inference.batching import PredictOptions, compatible_cohort, iter_predictions, predict_batch
from pipelines.inference.chunk_reading import chunks_loader
from pipelines.inference.output_table import neutralised, output_schema, records_table, row_to_record
from pipelines.inference.partial_lock import locked_partial

OUTPUT_SUFFIXES = (".parquet", ".csv")


class PredictAborted(RuntimeError):
    """More error rows than ``--max-errors``; finished chunks are kept for ``--resume``."""


class OutputWriteError(RuntimeError):
    """Writing the output failed (disk full, quota, permissions); finished chunks are kept."""

    def __init__(self, error: OSError, partial: Path) -> None:
        where = f" ({error.filename})" if error.filename else ""
        kept = (
            f"finished chunks are kept in {partial}"
            if any(partial.glob("chunk-*.parquet"))
            else "no chunk was finished"
        )
        super().__init__(
            f"could not write the output: {error.strerror or error or type(error).__name__}{where}; any earlier "
            f"output is untouched and {kept}: free space and rerun with --resume"
        )


@dataclass
class PredictSummary:
    """What a prediction run did.

    Attributes:
        error_reasons: reason -> error rows.
        without: modality -> reason -> ok rows predicted without that modality because its file
            failed (a blank cell is a normal missing modality and is not counted).
        skipped_lines: modality -> reason -> lines, rows or cells skipped in that modality's files.
        rows_with_skipped: modality -> rows whose file had something skipped.
        ignored: ``"modality.variable"`` -> rows with a value in a tabular variable that training never
            observed: the model has no embedding for it and ignores it.
    """

    output: Path
    rows: int = 0
    ok: int = 0
    errors: int = 0
    error_reasons: dict[str, int] = field(default_factory=dict)
    without: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_lines: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_with_skipped: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_chunks: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.nan

    def missing_shares(self) -> dict[str, float]:
        """Modality -> share of all rows predicted without it because its file failed."""
        return {m: sum(reasons.values()) / self.rows for m, reasons in self.without.items() if self.rows}

    def too_many_missing(self, allowed_share: float) -> list[str]:
        """One line per modality lost (file failed) in more than ``allowed_share`` of the rows."""
        return [
            f"{share:.1%} of rows were predicted without {name!r} (its file failed), more than "
            f"--allow-missing-share {allowed_share:g}"
            for name, share in sorted(self.missing_shares().items())
            if share > allowed_share
        ]


def _fingerprint(bundle: Bundle, cohort: Cohort, options: PredictOptions, positions: Sequence[int]) -> str:
    digest = hashlib.sha256(bundle.sha256.encode())
    digest.update(hashlib.sha256(cohort.table_path.read_bytes()).digest())
    digest.update(json.dumps(cohort.spec.model_dump(mode="json"), sort_keys=True).encode())
    # Speed settings and --max-errors do not change a row's output: a resume may change them.
    options_without_speed = {
        k: v for k, v in asdict(options).items() if k not in ("batch_size", "num_workers", "max_errors")
    }
    digest.update(json.dumps(options_without_speed, sort_keys=True).encode())
    digest.update(str(len(positions)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ChunkJob:
    """One prediction run cut into chunks: what every engine needs to predict chunk ``n``.

    Attributes:
        chunks: 0-based table positions of each chunk, in output order.
        partial: the folder of finished chunk files (``<output>.partial``).
        fingerprint: sha256 of the model, the cohort, the options and the row count; a resume or a
            worker with another fingerprint is refused.
    """

    bundle: Bundle
    cohort: Cohort
    options: PredictOptions
    chunks: list[list[int]]
    partial: Path
    fingerprint: str

    def part(self, number: int) -> Path:
        """The file of finished chunk ``number``."""
        return self.partial / f"chunk-{number:06d}.parquet"


def chunk_job(bundle: Bundle, cohort: Cohort, options: PredictOptions, partial: Path) -> ChunkJob:
    """The chunks of a run over ``cohort`` (its shard only, when ``options.shard`` is set)."""
    positions = list(range(len(cohort.table)))
    if options.shard is not None:
        positions = [p for p in positions if p % options.shard[1] == options.shard[0]]
    chunks = [positions[i : i + options.chunk_size] for i in range(0, len(positions), options.chunk_size)]
    fingerprint = _fingerprint(bundle, cohort, options, positions)
    return ChunkJob(bundle, cohort, options, chunks, Path(partial), fingerprint)


def predict_chunk(job: ChunkJob, number: int) -> list[PredictionRecord]:
    """Predict chunk ``number`` and write its file (to a temporary name, then renamed)."""
    records = list(iter_predictions(job.bundle, job.cohort, job.chunks[number], job.options))
    write_chunk(job, number, records)
    return records


def write_chunk(job: ChunkJob, number: int, records: Sequence[PredictionRecord]) -> None:
    """Write the file of finished chunk ``number`` (to a temporary name, then renamed)."""
    part = job.part(number)
    tmp = part.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(records_table(job.bundle, records), tmp)
    os.replace(tmp, part)


def read_chunk(part: Path) -> list[PredictionRecord]:
    """The records of a finished chunk file."""
    return [row_to_record(r) for r in pd.read_parquet(part).to_dict("records")]


class LocalEngine:
    """Predicts the chunks one after another in this process (the default engine), reading their
    rows through one DataLoader whose workers start once (:mod:`pipelines.inference.chunk_reading`)."""

    def predict_chunks(self, job: ChunkJob, numbers: Sequence[int]) -> Iterator[list[PredictionRecord]]:
        """The records of each chunk in ``numbers``, in that order, each chunk file written first."""
        if not numbers:
            return
        chunks = [job.chunks[number] for number in numbers]
        options = job.options
        loader, collate = chunks_loader(
            job.bundle, job.cohort, chunks, batch_size=options.batch_size, num_workers=options.num_workers
        )
        batches, distance = iter(loader), job.bundle.embedding_distance
        for number, chunk in zip(numbers, chunks, strict=True):
            records: list[PredictionRecord] = []
            while len(records) < len(chunk):
                samples, hashes, outside = next(batches)
                records += predict_batch(job.bundle, collate, samples, hashes, outside, options, distance)
            write_chunk(job, number, records)
            yield records


class ChunkEngine(Protocol):
    """Where chunks are predicted. ``predict_chunks`` yields the records of the chunks ``numbers`` in
    that order, each only once its chunk file is written; closing the iterator stops the work."""

    def predict_chunks(self, job: ChunkJob, numbers: Sequence[int]) -> Iterator[list[PredictionRecord]]: ...


def predict_cohort(
    bundle: Bundle,
    spec_path: str | Path,
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_records=None,
    engine: ChunkEngine | None = None,
) -> PredictSummary:
    """Predict every row (or every row of a shard) of a cohort into ``out`` (.parquet or .csv).

    Args:
        on_records: called as ``on_records(records, batch)`` once with each finished chunk's
            records, in input order (the audit log hooks in here). ``batch`` (``"<run>/<chunk>"``)
            stays the same when a resumed run passes the chunk again. A ``chunk-NNNNNN.taken`` file
            marks a chunk passed here; a resume passes finished chunks without it (written by
            workers after the driver stopped, or whose call failed or was killed before the mark),
            and the audit log skips a batch it already ends with, so each row is logged once.
        engine: where chunks are predicted (default: :class:`LocalEngine`, this process).

    Raises:
        SpecError: the cohort's spec or table does not fit the model (every problem listed), or ids
            repeat.
        PredictAborted: more than ``max_errors`` error rows; finished chunks stay for ``--resume``.
        OutputBusy: another run is writing the same output.
        OutputWriteError: the disk is full or the output cannot be written; finished chunks stay.
        ValueError: a resume with another model, cohort or options, or a bad output name.
    """
    options = options or PredictOptions()
    engine = engine or LocalEngine()
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{out}: the output must end in .parquet or .csv")
    cohort = compatible_cohort(bundle, spec_path)
    job = chunk_job(bundle, cohort, options, out.with_name(out.name + ".partial"))
    with locked_partial(out) as partial:
        run = _resumable(partial, job.fingerprint, resume)
        if run is None:
            partial_lock.clear(partial)
            run = uuid.uuid4().hex
            (partial / "state.json").write_text(
                json.dumps({"fingerprint": job.fingerprint, "chunks": len(job.chunks), "run": run})
            )
        try:
            summary = _run_chunks(job, engine, options, progress, on_records, run)
            summary.output = out
            summary.ignored = ignored_values(bundle, cohort)
            _assemble(bundle, partial, len(job.chunks), out)
        except BaseException as error:
            # A run refused before it passed a chunk to the audit log leaves nothing behind; chunks
            # it passed on stay for --resume.
            if not any(partial.glob("chunk-*.taken")):
                partial_lock.remove(partial)
            if isinstance(error, OSError):
                raise OutputWriteError(error, partial) from error
            raise
        partial_lock.remove(partial)
    summary.seconds = time.perf_counter() - started
    return summary


def ignored_values(bundle: Bundle, cohort: Cohort) -> dict[str, int]:
    """``"modality.variable"`` -> rows of ``cohort`` with a value in a tabular variable that the
    bundle's training split never observed (dropped at training, so ignored here)."""
    counts = {}
    for name, dropped in bundle.preprocessing.get("never_observed", {}).items():
        for column in dropped:
            if column in cohort.table.columns:
                filled = int(cohort.table[column].notna().sum())
                if filled:
                    counts[f"{name}.{column}"] = filled
    return counts


def _resumable(partial: Path, fingerprint: str, resume: bool) -> str | None:
    """The run id of the chunks of this very run in the locked ``partial`` to continue, or None.

    Raises:
        ValueError: ``resume`` was asked for, but the chunks were made with another model, cohort
            or options (they are never taken over).
    """
    state_file = partial / "state.json"
    if not (resume and state_file.is_file()):
        return None
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        state = {}
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{partial}: these partial results were made with another model, cohort or options; "
            "rerun without --resume to start over"
        )
    return str(state.get("run") or fingerprint[:32])


def _run_chunks(
    job: ChunkJob, engine: ChunkEngine, options: PredictOptions, progress: bool, on_records, run: str
) -> PredictSummary:
    """Predict the chunks not finished yet (finished ones are read back), in input order.

    A ``chunk-NNNNNN.taken`` marker records that a chunk's records were passed to ``on_records``
    (the audit log); a finished chunk without one is passed now, so every delivered row is logged
    once, before the output is assembled.
    """
    summary = PredictSummary(output=job.partial)
    todo = [number for number in range(len(job.chunks)) if not job.part(number).is_file()]
    fresh, pending = engine.predict_chunks(job, todo), set(todo)
    bar = tqdm(
        total=sum(map(len, job.chunks)), unit="patient", desc="predict", disable=None if progress else True
    )
    try:
        for number, chunk in enumerate(job.chunks):
            if number not in pending:
                records = read_chunk(job.part(number))
                summary.resumed_chunks += 1
            else:
                records = next(fresh)
            taken = job.part(number).with_suffix(".taken")
            if not taken.exists():
                if on_records is not None:
                    on_records(records, f"{run}/{number}")
                taken.touch()
            _count(summary, records)
            bar.update(len(chunk))
            if options.max_errors is not None and summary.errors > options.max_errors:
                raise PredictAborted(
                    f"{summary.errors} error rows exceed --max-errors {options.max_errors}; stopped after "
                    f"{summary.rows} rows. Finished chunks are kept in {job.partial}; fix the inputs and rerun "
                    "without --resume, or raise --max-errors and rerun with --resume."
                )
    finally:
        bar.close()
        fresh.close()
    return summary


def _count(summary: PredictSummary, records: Sequence[PredictionRecord]) -> None:
    reasons = Counter(summary.error_reasons)
    for record in records:
        summary.rows += 1
        if record.status == "ok":
            summary.ok += 1
            for name, reason in record.modality_errors.items():
                without = summary.without.setdefault(name, {})
                kind = _general(reason)
                without[kind] = without.get(kind, 0) + 1
        else:
            summary.errors += 1
            reasons[_reason_kind(record.error or "")] += 1
        for name, skipped in record.skipped_lines.items():
            summary.rows_with_skipped[name] = summary.rows_with_skipped.get(name, 0) + 1
            totals = summary.skipped_lines.setdefault(name, {})
            for why, n in skipped.items():
                totals[why] = totals.get(why, 0) + n
    summary.error_reasons = dict(reasons)


def _general(reason: str) -> str:
    """A per-file reason with its numbers as ``N``, so that rows failing the same way count together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def _reason_kind(reason: str) -> str:
    """The reason without per-file detail or numbers, for counting."""
    return _general(reason.split(":")[0] if reason.startswith("unreadable input") else reason.split(" (")[0])


def _assemble(bundle: Bundle, partial: Path, n_chunks: int, out: Path) -> None:
    """Stream the chunk files into one output, written to a temporary name and renamed."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    schema = output_schema(bundle)
    try:
        if out.suffix.lower() == ".parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for number in range(n_chunks):
                    writer.write_table(pq.read_table(partial / f"chunk-{number:06d}.parquet", schema=schema))
        else:
            records_table(bundle, []).to_pandas().to_csv(tmp, index=False)
            for number in range(n_chunks):
                frame = pq.read_table(partial / f"chunk-{number:06d}.parquet", schema=schema).to_pandas()
                neutralised(frame).to_csv(tmp, mode="a", header=False, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


"""Text a spreadsheet would run as a formula when it starts a cell (OWASP's CSV injection rule)."""
