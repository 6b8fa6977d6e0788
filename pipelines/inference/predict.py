"""``deepwe predict``: batch prediction that never loses a row.

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
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from data_schemas import NeighbourWeight, PatientRecord, PredictionRecord, Problem, TokenWeight
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort, is_missing, load_cohort
from pipelines.cohorts.dataset import MAX_STANDARD_SCORE, Batch, CohortDataset, PatientCollator, PatientSample
from pipelines.cohorts.prepare import tabular_arrays
from pipelines.cohorts.spec_io import SpecError
from pipelines.cohorts.validate import id_problems, missing_column_problems
from pipelines.evaluation.ood import range_violations
from pipelines.inference import partial_lock
from pipelines.inference.partial_lock import locked_partial

OUTPUT_SUFFIXES = (".parquet", ".csv")
JSON_COLUMNS = (
    "out_of_range",
    "probabilities",
    "modality_present",
    "modality_weights",
    "modality_errors",
    "skipped_lines",
    "top_features",
    "neighbours",
)


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


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction job.

    Attributes:
        on_bad_file: ``missing`` predicts without a modality whose file cannot be read (and says so
            in the row); ``error`` makes such a row an error row.
        max_errors: abort, cleanly, once more rows than this are errors (None: never).
        shard: ``(i, n)``: predict only rows whose 0-based position p has ``p % n == i``.
        batch_size: patients per forward pass.
        chunk_size: rows per checkpointed chunk.
        top_features: feature weights kept per row.
        neighbours: similar reference patients kept per row.
    """

    on_bad_file: str = "missing"
    max_errors: int | None = None
    shard: tuple[int, int] | None = None
    batch_size: int = 64
    chunk_size: int = 256
    num_workers: int = 0
    top_features: int = 5
    neighbours: int = 3

    def __post_init__(self) -> None:
        if self.on_bad_file not in ("missing", "error"):
            raise ValueError(f"on_bad_file must be 'missing' or 'error', got {self.on_bad_file!r}")
        if self.shard is not None and not (0 <= self.shard[0] < self.shard[1]):
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {self.shard[0]}/{self.shard[1]}")


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def check_compatible(bundle: Bundle, cohort: Cohort) -> list[Problem]:
    """Problems that make this cohort unusable with this model (modalities, columns, duplicate ids)."""
    problems: list[Problem] = []
    spec_file = str(cohort.spec_path)
    trained = bundle.spec.modalities
    for name, modality in trained.items():
        given = cohort.spec.modalities.get(name)
        if given is None:
            problems.append(
                Problem(
                    file=spec_file,
                    column=f"modalities.{name}",
                    expected=f"modality {name!r} the model was trained with",
                )
            )
            continue
        reading_only = {"column", "max_file_mb"}  # where and how much to read, not what the model sees
        theirs, ours = given.model_dump(exclude=reading_only), modality.model_dump(exclude=reading_only)
        if theirs != ours:
            problems.append(
                Problem(
                    file=spec_file,
                    column=f"modalities.{name}",
                    value=json.dumps(theirs),
                    expected=f"the model's settings {json.dumps(ours)}",
                )
            )
    table_file = str(cohort.table_path)
    columns = list(cohort.table.columns)
    problems += missing_column_problems(
        cohort.spec, columns, table_file, optional=("outcome.column", "split.column")
    )
    if cohort.spec.id in columns:
        problems += id_problems(cohort.table[cohort.spec.id], cohort.spec.id, table_file)
    return problems


def compatible_cohort(bundle: Bundle, spec_path: str | Path) -> Cohort:
    """The cohort at ``spec_path``, checked against what the model needs.

    Raises:
        SpecError: every column, id or spec problem that keeps the model from reading the cohort.
    """
    cohort = load_cohort(spec_path)
    problems = check_compatible(bundle, cohort)
    if problems:
        raise SpecError(problems)
    return cohort


class PredictionDataset(Dataset):
    """Patients to predict: reads files (bad ones become missing with a reason) and hashes each row's
    input (``hash_inputs=False`` skips re-reading the files for the hash: the digest is then "")."""

    def __init__(
        self,
        bundle: Bundle,
        cohort: Cohort,
        records: Sequence[PatientRecord],
        table: pd.DataFrame,
        *,
        hash_inputs: bool = True,
        refused: dict[int, str] | None = None,
    ) -> None:
        self.bundle, self.cohort, self.records = bundle, cohort, list(records)
        self.hash_inputs = hash_inputs
        self.refused = refused or {}
        cleaned, self.cell_errors = _clean_numeric(bundle, table)
        self.rows = table.to_dict("records")
        self.inner = CohortDataset(
            cohort.spec,
            self.records,
            np.full(len(self.records), -1),
            tabular_arrays(bundle.preprocessing, cleaned),
            sensor_stats=bundle.preprocessing["sensor"],
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[PatientSample, str, list[str]]:
        sample, digest = self._read_with_digest(index)
        sample.refused = sample.refused or self.refused.get(index)
        for name, reason in self.cell_errors.get(index, {}).items():
            sample.errors.setdefault(name, reason)
        outside = [
            f"{name}.{variable}"
            for name, state in self.bundle.preprocessing["tabular"].items()
            for variable in range_violations(state, self.rows[index])
        ]
        return sample, digest, outside

    def _read_with_digest(self, index: int) -> tuple[PatientSample, str]:
        """The row read, and the sha256 of exactly the bytes it was read from.

        The files are hashed, then decoded, and their identity (inode, size, mtime, ctime) compared
        before and after: a file rewritten in between is read again, and a row whose files keep
        changing is refused rather than logged with the hash of bytes it did not use.
        """
        if not self.hash_inputs:
            return self.inner[index], ""
        record, row = self.records[index], self.rows[index]
        for _ in range(READ_TRIES):
            before = _identities(record)
            digest = input_sha256(self.cohort, record, row)
            sample = self.inner[index]
            if _identities(record) == before:
                return sample, digest
        sample.refused = (
            f"row {record.row}: its input files changed while they were read ({READ_TRIES} tries)"
        )
        return sample, digest


def _clean_numeric(bundle: Bundle, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, dict[str, str]]]:
    """Numeric cells the model cannot use become missing, with the reason kept per row (no value
    shown): a non-number, or a number more than ``MAX_STANDARD_SCORE`` training SDs from the mean
    (such a value is also listed in the row's ``out_of_range``)."""
    cleaned = table.copy()
    errors: dict[int, dict[str, str]] = {}
    for name, state in bundle.preprocessing["tabular"].items():
        for item in state["numeric"]:
            column = item["name"]
            numbers = pd.to_numeric(cleaned[column], errors="coerce").astype("float64")
            not_number = numbers.isna() & ~cleaned[column].map(is_missing)
            with np.errstate(over="ignore", invalid="ignore"):
                scores = ((numbers - item["mean"]) / item["std"]).abs()
            far = numbers.notna() & ~(scores <= MAX_STANDARD_SCORE)
            for index in np.flatnonzero(not_number.to_numpy()):
                errors.setdefault(int(index), {})[name] = (
                    f"column {column!r} is not a number; treated as missing"
                )
            for index in np.flatnonzero(far.to_numpy()):
                errors.setdefault(int(index), {})[name] = (
                    f"column {column!r} is more than {MAX_STANDARD_SCORE:g} training SDs from the mean "
                    "(out of range); treated as missing"
                )
            cleaned[column] = numbers.where(~(not_number | far))
    return cleaned, errors


READ_TRIES = 3


def _identities(record: PatientRecord) -> dict[str, tuple[int, ...] | None]:
    """Modality -> (inode, size, mtime ns, ctime ns) of its file, None when absent: a rewrite shows."""
    found: dict[str, tuple[int, ...] | None] = {}
    for name, path in record.paths.items():
        try:
            info = os.stat(path) if path is not None else None
        except OSError:
            info = None
        found[name] = (
            None if info is None else (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        )
    return found


def input_sha256(cohort: Cohort, record: PatientRecord, row: dict[str, Any]) -> str:
    """sha256 of the row's cells (canonical JSON) and of the bytes of every file it references."""
    digest = hashlib.sha256(
        json.dumps({k: None if is_missing(v) else str(v) for k, v in row.items()}, sort_keys=True).encode()
    )
    for name in sorted(record.paths):
        path = record.paths[name]
        digest.update(name.encode())
        if path is not None and os.path.isfile(path):
            with open(path, "rb") as handle:
                for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


class _Collate:
    def __init__(self, encoders) -> None:
        self.patients = PatientCollator(encoders)

    def __call__(self, items):
        samples = [item[0] for item in items]
        return samples, [item[1] for item in items], [item[2] for item in items]


def prediction_loader(
    bundle: Bundle,
    cohort: Cohort,
    positions: Sequence[int],
    *,
    batch_size: int,
    num_workers: int = 0,
    hash_inputs: bool = True,
) -> tuple[DataLoader, PatientCollator]:
    """Batches ``(samples, input sha256s, out-of-range variables)`` of the rows at 0-based
    ``positions`` (the dataset is ``loader.dataset``), and the collator that makes a model
    :class:`Batch` of samples."""
    by_position: dict[int, str] = {}
    chosen = list(cohort.records(positions, refused=by_position))
    table = cohort.table.iloc[list(positions)].reset_index(drop=True)
    refused = {i: by_position[p] for i, p in enumerate(positions) if p in by_position}
    dataset = PredictionDataset(bundle, cohort, chosen, table, hash_inputs=hash_inputs, refused=refused)
    collate = _Collate(bundle.model.encoders)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    return loader, collate.patients


def iter_predictions(
    bundle: Bundle, cohort: Cohort, positions: Sequence[int], options: PredictOptions
) -> Iterator[PredictionRecord]:
    """Predictions for the rows at 0-based ``positions`` of the cohort table, in that order.

    This is the function the CLI, the dashboard and the tests all call.
    """
    loader, collate = prediction_loader(
        bundle, cohort, positions, batch_size=options.batch_size, num_workers=options.num_workers
    )
    distance = bundle.embedding_distance
    for samples, hashes, outside in loader:
        yield from predict_batch(bundle, collate, samples, hashes, outside, options, distance)


def _error_record(sample: PatientSample, digest: str, bundle: Bundle, reason: str) -> PredictionRecord:
    return PredictionRecord(
        row=sample.row,
        patient_id=sample.patient_id,
        status="error",
        error=reason,
        modality_errors=sample.errors,
        skipped_lines=sample.skipped,
        model_sha256=bundle.sha256,
        input_sha256=digest,
    )


@torch.no_grad()
def predict_batch(bundle, collate, samples, hashes, outside, options, distance) -> list[PredictionRecord]:
    """One prediction record per sample (error records for unusable rows), in order."""
    results: dict[int, PredictionRecord] = {}
    usable = []
    for i, sample in enumerate(samples):
        present = [name for name, value in sample.inputs.items() if value is not None]
        if sample.refused is not None:
            results[i] = _error_record(sample, hashes[i], bundle, sample.refused)
        elif sample.errors and options.on_bad_file == "error":
            failed = sorted(sample.errors)
            results[i] = _error_record(
                sample,
                hashes[i],
                bundle,
                f"unreadable input in {', '.join(failed)}: " + "; ".join(sample.errors[m] for m in failed),
            )
        elif not present:
            reason = "no usable modality" + (
                f" ({'; '.join(f'{m}: {r}' for m, r in sorted(sample.errors.items()))})"
                if sample.errors
                else ""
            )
            results[i] = _error_record(sample, hashes[i], bundle, reason)
        else:
            usable.append(i)
    context = (bundle, collate, samples, hashes, outside, options, distance)
    try:
        results |= _forward(context, usable)
    except (ValueError, RuntimeError):
        # One row the model refuses must not take the batch with it: retry the rows one by one.
        for i in usable:
            try:
                results |= _forward(context, [i])
            except (ValueError, RuntimeError) as error:
                reason = f"the model could not use this row's inputs ({type(error).__name__}: {error})"
                results[i] = _error_record(samples[i], hashes[i], bundle, reason)
    return [results[i] for i in range(len(samples))]


def _forward(context, usable: Sequence[int]) -> dict[int, PredictionRecord]:
    """Records of the samples at positions ``usable`` of the batch, from one forward pass."""
    bundle, collate, samples, hashes, outside, options, distance = context
    if not usable:
        return {}
    batch: Batch = collate([samples[i] for i in usable]).to(bundle.device)
    output = bundle.model(batch)
    ood_rank, ood_flag = distance.score(output.fused)
    probabilities = torch.softmax(output.logits.float() / bundle.temperature, dim=1).cpu()
    return {
        i: _record(
            bundle,
            batch,
            output,
            j,
            samples[i],
            hashes[i],
            outside[i],
            probabilities[j],
            float(ood_rank[j]),
            bool(ood_flag[j]),
            options,
        )
        for j, i in enumerate(usable)
    }


def _record(
    bundle, batch, output, j, sample, digest, outside, probabilities, ood_rank, ood_flag, options
) -> PredictionRecord:
    classes = bundle.classes
    modalities = output.modalities
    present = {m: bool(output.modality_present[j, k]) for k, m in enumerate(modalities)}
    weights = {m: round(float(output.modality_weights[j, k]), 6) for k, m in enumerate(modalities)}
    tokens = _top_tokens(batch, output, j, modalities, options.top_features)
    neighbours = []
    if output.neighbours is not None:
        reference = bundle.contents.reference
        ids = bundle.contents.reference_ids
        order = torch.argsort(output.neighbour_weights[j], descending=True)[: options.neighbours]
        for k in order.tolist():
            index = int(output.neighbours[j, k])
            label = reference.get("labels")
            neighbours.append(
                NeighbourWeight(
                    reference_id=ids[index],
                    weight=float(output.neighbour_weights[j, k]),
                    outcome=None if label is None else classes[int(label[index])],
                )
            )
    if len(classes) == 2:
        risk = float(probabilities[1])
        threshold = bundle.threshold if bundle.threshold is not None else 0.5
        label = classes[1] if risk >= threshold else classes[0]
    else:
        risk = None
        label = classes[int(torch.argmax(probabilities))]
    return PredictionRecord(
        row=sample.row,
        patient_id=sample.patient_id,
        status="ok",
        risk=risk,
        probabilities={c: round(float(p), 6) for c, p in zip(classes, probabilities.tolist(), strict=True)},
        label=label,
        modality_present=present,
        modality_weights=weights,
        modality_errors=sample.errors,
        skipped_lines=sample.skipped,
        top_features=tokens,
        neighbours=neighbours,
        ood=ood_flag or bool(outside),
        ood_score=round(ood_rank, 6),
        out_of_range=outside,
        model_sha256=bundle.sha256,
        input_sha256=digest,
    )


def _top_tokens(batch: Batch, output, j: int, modalities: Sequence[str], k: int) -> list[TokenWeight]:
    """Patient ``j``'s ``k`` tokens of largest feature weight (ties in modality, then token order)."""
    weights, names = [], []
    for m in modalities:
        names.append(batch.inputs[m].names[j])
        weights.append(output.feature_weights[m][j].detach().float().cpu().numpy()[: len(names[-1])])
    every = np.minimum(np.concatenate(weights) if weights else np.zeros(0, np.float32), 1.0)
    starts = np.cumsum([0, *(len(w) for w in weights)])
    kept = np.flatnonzero(every > 0)
    top = kept[np.argsort(-every[kept], kind="stable")[:k]]
    owner = np.searchsorted(starts, top, side="right") - 1
    return [
        TokenWeight(modality=modalities[o], token=names[o][t - starts[o]], weight=float(every[t]))
        for t, o in zip(top.tolist(), owner.tolist(), strict=True)
    ]


def token_modalities(bundle: Bundle) -> list[str]:
    """Text modalities with word-piece tokens: their token names are note text, kept out of logs."""
    encoders = bundle.contents.config["encoders"]
    return [
        name
        for name, s in encoders.items()
        if s["encoder"] == "text" and s["config"].get("granularity") == "token"
    ]


def record_to_row(record: PredictionRecord) -> dict[str, Any]:
    """A flat output row: JSON text for nested fields, plus ``present_<m>`` / ``weight_<m>`` columns."""
    data = record.model_dump(mode="json")
    row = {k: (json.dumps(v) if k in JSON_COLUMNS else v) for k, v in data.items()}
    for name, flag in record.modality_present.items():
        row[f"present_{name}"] = flag
    for name, weight in record.modality_weights.items():
        row[f"weight_{name}"] = weight
    return row


def row_to_record(row: dict[str, Any]) -> PredictionRecord:
    """The inverse of :func:`record_to_row`."""
    data = {k: v for k, v in row.items() if not k.startswith(("present_", "weight_"))}
    for key in JSON_COLUMNS:
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    data = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
    for key in ("patient_id", "label", "error"):  # CSV readers guess numbers for "1" or "007"
        if data.get(key) is not None:
            data[key] = str(data[key])
    return PredictionRecord.model_validate(data)


_FIELD_TYPES = {"row": pa.int64(), "risk": pa.float64(), "ood": pa.bool_(), "ood_score": pa.float64()}


def output_schema(bundle: Bundle) -> pa.Schema:
    """The output table's columns and types (strings unless listed in ``_FIELD_TYPES``)."""
    fields = [pa.field(name, _FIELD_TYPES.get(name, pa.string())) for name in PredictionRecord.model_fields]
    fields += [pa.field(f"present_{m}", pa.bool_()) for m in bundle.spec.modalities]
    fields += [pa.field(f"weight_{m}", pa.float64()) for m in bundle.spec.modalities]
    return pa.schema(fields)


def records_table(bundle: Bundle, records: Sequence[PredictionRecord]) -> pa.Table:
    """The output table of these records (the columns of :func:`output_schema`)."""
    schema = output_schema(bundle)
    rows = [record_to_row(r) for r in records]
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


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
    part = job.part(number)
    tmp = part.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(records_table(job.bundle, records), tmp)
    os.replace(tmp, part)
    return records


def read_chunk(part: Path) -> list[PredictionRecord]:
    """The records of a finished chunk file."""
    return [row_to_record(r) for r in pd.read_parquet(part).to_dict("records")]


class LocalEngine:
    """Predicts the chunks one after another in this process (the default engine)."""

    def predict_chunks(self, job: ChunkJob, numbers: Sequence[int]) -> Iterator[list[PredictionRecord]]:
        """The records of each chunk in ``numbers``, in that order, each chunk file written first."""
        for number in numbers:
            yield predict_chunk(job, number)


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


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""Text a spreadsheet would run as a formula when it starts a cell (OWASP's CSV injection rule)."""
_QUOTED_FORMULA = r"^'[=+\-@\t\r]"


def neutralised(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a formula prefixed by ``'`` (for CSV output).

    A spreadsheet then shows the text instead of running it; :func:`read_predictions` removes the
    prefix again.
    """
    frame = frame.copy()
    for column in frame.columns:
        if _is_text(frame[column]):
            text = frame[column]
            risky = text.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START))
            frame[column] = text.where(~risky, "'" + text.astype(str))
    return frame


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A ``deepwe predict`` output (Parquet, or CSV with formula-like text un-neutralised)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path)
    for column in frame.columns:
        if _is_text(frame[column]):
            quoted = (
                frame[column].astype(str).str.contains(_QUOTED_FORMULA, regex=True) & frame[column].notna()
            )
            frame[column] = frame[column].where(~quoted, frame[column].astype(str).str[1:])
    return frame


def merge_shards(paths: Sequence[str | Path], out: str | Path) -> int:
    """Join shard outputs into one file in input order; refuses overlaps and gaps. Returns the row count."""
    frames = [read_predictions(p) for p in paths]
    merged = pd.concat(frames, ignore_index=True).sort_values("row", kind="stable")
    rows = merged["row"].to_numpy()
    if len(set(rows.tolist())) != len(rows):
        raise ValueError("the shard outputs overlap: some rows appear twice")
    expected = np.arange(1, len(rows) + 1)
    if not np.array_equal(rows, expected):
        missing = sorted(set(expected.tolist()) - set(rows.tolist()))[:10]
        raise ValueError(f"the shard outputs leave gaps: rows {missing} are missing (is a shard absent?)")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if out.suffix.lower() == ".parquet":
        merged.to_parquet(tmp, index=False)
    else:
        neutralised(merged).to_csv(tmp, index=False)
    os.replace(tmp, out)
    return len(merged)
