"""Prediction of table rows in batches: the options of a run, the compatibility of a cohort with a
bundle, reading rows in DataLoader workers, and one :class:`~data_schemas.PredictionRecord` per
row (an error record when a row cannot be predicted)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from data_schemas import PatientRecord, PredictionRecord, Problem
from data_schemas.cohort_spec import SensorModality
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort, is_missing, load_cohort
from pipelines.cohorts.dataset import MAX_STANDARD_SCORE, Batch, CohortDataset, PatientCollator, PatientSample
from pipelines.cohorts.decoded_cache import content_sha256
from pipelines.cohorts.prepare import tabular_arrays
from pipelines.cohorts.spec_io import SpecError
from pipelines.cohorts.statistics_together import decode_statistics_together
from pipelines.cohorts.validate import id_problems, missing_column_problems
from pipelines.common.parallelism import die_with_parent
from pipelines.evaluation.ood import range_violations
from pipelines.inference.batch_records import ok_records


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

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[PatientSample, str, list[str]]]:
        """The rows at ``indices`` (what a DataLoader batch asks for), after the PhysioNet 2012 files
        of their per-variable sensor modalities were decoded together
        (:mod:`pipelines.cohorts.statistics_together`)."""
        for name, modality in self.cohort.spec.file_modalities().items():
            stats = self.bundle.preprocessing["sensor"].get(name)
            if isinstance(modality, SensorModality) and stats and stats.get("tokens") == "variables":
                paths = [p for i in indices if (p := self.records[i].paths.get(name)) is not None]
                decode_statistics_together(paths, modality, stats)
        return [self[i] for i in indices]

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
    """sha256 of the row's cells (canonical JSON) and of the sha256 of every file it references
    (the same file hash that keys the decoded-file cache, so each file is hashed once)."""
    digest = hashlib.sha256(
        json.dumps({k: None if is_missing(v) else str(v) for k, v in row.items()}, sort_keys=True).encode()
    )
    for name in sorted(record.paths):
        path = record.paths[name]
        digest.update(name.encode())
        file_digest = content_sha256(path) if path is not None else None
        if file_digest is not None:
            digest.update(file_digest.encode())
    return digest.hexdigest()


class PredictionCollate:
    """A DataLoader batch of dataset items as ``(samples, input sha256s, out-of-range variables)``;
    ``patients`` makes a model :class:`Batch` of samples."""

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
    dataset = prediction_dataset(bundle, cohort, positions, hash_inputs=hash_inputs)
    collate = PredictionCollate(bundle.model.encoders)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=die_with_parent(),
    )
    return loader, collate.patients


def prediction_dataset(
    bundle: Bundle, cohort: Cohort, positions: Sequence[int], *, hash_inputs: bool = True
) -> PredictionDataset:
    """The rows at 0-based ``positions`` to predict (a path escaping the data root refuses its row)."""
    by_position: dict[int, str] = {}
    chosen = list(cohort.records(positions, refused=by_position))
    table = cohort.table.iloc[list(positions)].reset_index(drop=True)
    refused = {i: by_position[p] for i, p in enumerate(positions) if p in by_position}
    return PredictionDataset(bundle, cohort, chosen, table, hash_inputs=hash_inputs, refused=refused)


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
    ood = distance.score(output.fused)
    probabilities = torch.softmax(output.logits.float() / bundle.temperature, dim=1).cpu()
    rows = [(samples[i], hashes[i], outside[i]) for i in usable]
    records = ok_records(bundle, batch, output, probabilities, ood, rows, options)
    return dict(zip(usable, records, strict=True))


def token_modalities(bundle: Bundle) -> list[str]:
    """Text modalities with word-piece tokens: their token names are note text, kept out of logs."""
    encoders = bundle.contents.config["encoders"]
    return [
        name
        for name, s in encoders.items()
        if s["encoder"] == "text" and s["config"].get("granularity") == "token"
    ]
