"""From cohort rows to model batches: reading files per modality and collating them per encoder.

Reading happens in ``CohortDataset.__getitem__`` (DataLoader workers); a file that cannot be read
fails its modality, not the batch: the sample records the reason and the modality is treated as
missing. Collation asks each modality's encoder to batch its samples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data_schemas import CohortSpec, PatientRecord
from data_schemas.cohort_spec import (
    AudioModality,
    ImageModality,
    SensorModality,
    TextModality,
)
from encoders.readers import (
    ReaderError,
    SensorArray,
    TabularArrays,
    inline_text,
    read_audio,
    read_image,
    read_sensor,
    read_text,
)
from encoders.series_statistics import (
    ObservedCells,
    SeriesObservations,
    SeriesStatistics,
    series_observations_of_cells,
    series_statistics,
    series_statistics_of_cells,
)
from encoders.tokens import EncoderBatch
from pipelines.cohorts.decoded_cache import decoded

UNLABELLED = -1


@dataclass
class PatientSample:
    """One patient's inputs after reading: ``inputs[m]`` is None when modality m is missing or failed.

    ``errors[m]`` says why modality m failed; ``skipped[m]`` counts, per reason, the lines of m's
    file that were skipped while the rest was read; ``refused`` says why the whole row is refused
    (a path escaping the data root), else None.
    """

    index: int
    row: int
    patient_id: str
    label: int
    inputs: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: str | None = None


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        inputs: modality -> :class:`EncoderBatch` (its ``present`` (B,) says who has the modality).
        labels: (B,) long class indices, -1 for unlabelled patients.
        indices: (B,) long positions in the dataset.
        rows: 1-based table rows.
        patient_ids: the patients' ids.
        errors: per patient, modality -> reason for each file that could not be read.
    """

    inputs: dict[str, EncoderBatch]
    labels: torch.Tensor
    indices: torch.Tensor
    rows: list[int]
    patient_ids: list[str]
    errors: list[dict[str, str]]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            inputs={name: batch.to(device) for name, batch in self.inputs.items()},
            labels=self.labels.to(device),
            indices=self.indices.to(device),
            rows=self.rows,
            patient_ids=self.patient_ids,
            errors=self.errors,
        )

    def present(self) -> dict[str, torch.Tensor]:
        """Modality -> (B,) bool present flags."""
        return {name: batch.present for name, batch in self.inputs.items()}


def label_index(spec: CohortSpec, classes: Sequence[str]) -> Callable[[str | None], int]:
    """Map a canonical outcome label to a class index (binary: 1 = the positive class)."""
    if spec.outcome is None:
        return lambda label: UNLABELLED
    if spec.outcome.task == "binary":
        positive = spec.outcome.positive_label()
        return lambda label: UNLABELLED if label is None else int(label == positive)
    lookup = {label: i for i, label in enumerate(classes)}
    return lambda label: UNLABELLED if label is None else lookup[label]


MAX_STANDARD_SCORE = 1e4
"""A standardised value beyond this many training standard deviations is read as unobserved: no
measurement lies that far out, and it would overflow the model's float32 arithmetic."""
SKIP_FAR_OUT = f"value more than {MAX_STANDARD_SCORE:g} training SDs from the mean (read as unobserved)"


def _observed_scores(
    array: SensorArray, stats: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard scores of the observed cells only (a long grid is mostly unobserved).

    Returns:
        ``cells`` (K,) flat indices of the observed cells of the (T, C) grid, their standard scores
        (K,) float64 against the training mean and std, and ``far`` (K,): the scores more than
        :data:`MAX_STANDARD_SCORE` SDs out.
    """
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    cells = array.cells()
    channel = cells % array.observed.shape[1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scores = (array.values.reshape(-1)[cells].astype(np.float64) - mean[channel]) / std[channel]
    return cells, scores, ~(np.abs(scores) <= MAX_STANDARD_SCORE)


def _counted(array: SensorArray, far: np.ndarray) -> dict[str, int]:
    return {**array.skipped, SKIP_FAR_OUT: int(far.sum())} if far.any() else dict(array.skipped)


def standardise(array: SensorArray, stats: Mapping[str, Any]) -> SensorArray:
    """Observed values minus the training mean, over the training std, per channel (0 elsewhere).

    An observed value more than :data:`MAX_STANDARD_SCORE` SDs out becomes unobserved and is counted
    in ``skipped``.
    """
    cells, scores, far = _observed_scores(array, stats)
    values = np.zeros(array.values.size, dtype=np.float32)
    values[cells[~far]] = scores[~far]
    observed = array.observed.copy()
    observed.reshape(-1)[cells[far]] = False
    values = values.reshape(array.values.shape)
    return replace(
        array, values=values, observed=observed, skipped=_counted(array, far), observed_cells=cells[~far]
    )


def without_far_values(array: SensorArray, stats: Mapping[str, Any]) -> SensorArray:
    """``array`` in its own units with the values :func:`standardise` would refuse made unobserved
    (and counted in ``skipped``)."""
    cells, _, far = _observed_scores(array, stats)
    if not far.any():
        return array
    values, observed = array.values.copy(), array.observed.copy()
    values.reshape(-1)[cells[far]] = 0.0
    observed.reshape(-1)[cells[far]] = False
    return replace(
        array, values=values, observed=observed, skipped=_counted(array, far), observed_cells=cells[~far]
    )


def file_reader(
    modality: TextModality | ImageModality | AudioModality | SensorModality,
    stats: Mapping[str, Any] | None = None,
) -> Callable[[str], Any]:
    """The reader that turns one file of ``modality`` into its encoder's sample.

    Args:
        stats: for a sensor modality, the per-channel ``mean`` and ``std`` fitted on training files.
    """
    if modality.kind == "text":
        return lambda path: decoded("text", path, lambda p: read_text(p).text)
    if modality.kind == "image":
        return lambda path: decoded("image", path, read_image)
    if modality.kind == "audio":
        how = ("audio", modality.sample_rate, modality.duration_s)
        return lambda path: decoded(
            how,
            path,
            lambda p: read_audio(p, sample_rate=modality.sample_rate, duration_s=modality.duration_s),
        )
    if stats is None:
        raise ValueError("a sensor reader needs the training split's channel statistics")
    if stats.get("tokens") == "variables":
        untrained = [modality.channels.index(c) for c in stats.get("never_observed", [])]
        return lambda path: without_channels(read_series_statistics(path, modality, stats), untrained)
    return lambda path: standardise(read_sensor_file(path, modality), stats)


def without_channels(statistics: SeriesStatistics, channels: Sequence[int]) -> SeriesStatistics:
    """``statistics`` with ``channels`` masked (and their measurements left out): channels never
    observed in training are ignored, since their embeddings were never trained."""
    if not channels:
        return statistics
    observed = statistics.observed.copy()
    observed[list(channels)] = False
    values = np.where(observed, statistics.values, 0.0).astype(np.float32)
    measurements = statistics.observations
    if measurements is not None:
        keep = ~np.isin(measurements.channel, list(channels))
        measurements = SeriesObservations(
            measurements.hours_before_end[keep], measurements.channel[keep], measurements.value[keep]
        )
    return replace(statistics, values=values, observed=observed, observations=measurements)


def read_series_statistics(
    path: str, modality: SensorModality, stats: Mapping[str, Any] | None = None
) -> SeriesStatistics:
    """The per-channel statistics of a sensor file (raw units), for per-variable sensor tokens.

    With the training ``stats``, values :func:`standardise` would refuse are left out first, and
    the statistics themselves are kept in the decoded cache under the file's content, its grid
    settings and the training mean and std: a warm read loads a few hundred numbers instead of the
    grid. The measurements are kept too when the stats say the encoder reads trajectories. The
    lines, cells and values skipped while reading are kept in ``skipped``.
    """
    if stats is None:
        array = read_sensor_file(path, modality)
        return replace(series_statistics(array), skipped=dict(array.skipped))
    return decoded(
        statistics_how(modality, stats),
        path,
        lambda p: grid_statistics(read_sensor_file(p, modality), stats),
        counted_inside=True,
    )


def grid_statistics(array: SensorArray, stats: Mapping[str, Any]) -> SeriesStatistics:
    """The statistics of a grid without the values :func:`standardise` would refuse under the
    training ``stats`` (with its measurements when ``stats`` asks for trajectories), with every
    line, cell and value skipped in ``skipped``."""
    array = without_far_values(array, stats)
    keep = bool(stats.get("trajectory"))
    return replace(series_statistics(array, keep_observations=keep), skipped=dict(array.skipped))


def grid_statistics_together(
    arrays: Sequence[SensorArray], stats: Mapping[str, Any]
) -> list[SeriesStatistics]:
    """:func:`grid_statistics` of many grids of one modality at once: bit-identical, one set of numpy
    calls for all of them instead of one per grid."""
    if not arrays:
        return []
    channels = arrays[0].observed.shape[1]
    cells = [array.cells() for array in arrays]
    owner = np.repeat(np.arange(len(arrays)), [len(c) for c in cells])
    flat = np.concatenate(cells)
    value = np.concatenate([a.values.reshape(-1)[c] for a, c in zip(arrays, cells, strict=True)])
    channel = flat % channels
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scores = (value.astype(np.float64) - mean[channel]) / std[channel]
    kept = np.abs(scores) <= MAX_STANDARD_SCORE
    far = np.bincount(owner[~kept], minlength=len(arrays))
    where = ObservedCells(
        owner[kept],
        flat[kept],
        value[kept].astype(np.float64),
        channels,
        np.array([a.observed.shape[0] for a in arrays]),
        np.array([float(a.start_s) for a in arrays]),
        np.array([float(a.rate_hz) for a in arrays]),
    )
    values, observed = series_statistics_of_cells(where)
    measurements = series_observations_of_cells(where) if stats.get("trajectory") else [None] * len(arrays)
    return [
        SeriesStatistics(
            values[f],
            observed[f],
            {**a.skipped, SKIP_FAR_OUT: int(far[f])} if far[f] else dict(a.skipped),
            measurements[f],
        )
        for f, a in enumerate(arrays)
    ]


def statistics_how(modality: SensorModality, stats: Mapping[str, Any]) -> tuple[Any, ...]:
    """The decoded-cache settings of a sensor file's statistics: its grid's, the sha256 of the
    training mean and std per channel (what :func:`without_far_values` reads) and whether the
    measurements are kept."""
    scale = hashlib.sha256(json.dumps([stats["mean"], stats["std"]]).encode()).hexdigest()
    return ("sensor statistics", sensor_how(modality), scale, bool(stats.get("trajectory")))


def sensor_how(modality: SensorModality) -> tuple[Any, ...]:
    """The settings that shape a sensor file's grid: part of its decoded-cache key."""
    return (
        "sensor",
        tuple(modality.channels or ()),
        modality.rate_hz,
        modality.time_column,
        modality.time_unit,
        modality.duration_s,
        tuple(modality.summed_channels),
        modality.max_file_mb,
    )


def read_sensor_file(path: str, modality: SensorModality) -> SensorArray:
    """Read a sensor file onto the grid its modality's spec describes (raw units)."""
    return decoded(sensor_how(modality), path, lambda p: _read_sensor_grid(p, modality))


def _read_sensor_grid(path: str, modality: SensorModality) -> SensorArray:
    return read_sensor(
        path,
        channels=modality.channels,
        rate_hz=modality.rate_hz,
        time_column=modality.time_column,
        time_unit=modality.time_unit,
        duration_s=modality.duration_s,
        summed=modality.summed_channels,
        max_bytes=round(modality.max_file_mb * 1_000_000),
    )


class CohortDataset(Dataset):
    """Patients of a cohort, read on demand.

    Args:
        spec: the cohort spec.
        records: the patients, in order.
        labels: (N,) class index per record, -1 when unlabelled.
        tabular: per tabular modality, the preprocessed arrays of these records (row i = record i).
        sensor_stats: per sensor modality, the channel statistics fitted on the training split.
        on_bad_file: ``"missing"`` treats an unreadable file as a missing modality (with the reason
            kept in ``PatientSample.errors``); ``"error"`` raises the :class:`ReaderError`.
        keep_statistics: keep each file's series statistics (a few hundred numbers) after its first
            read, so that training reads such a file once, not once per epoch. Off for prediction,
            which reads each row once and must see the bytes on disk at that moment.
    """

    def __init__(
        self,
        spec: CohortSpec,
        records: Sequence[PatientRecord],
        labels: np.ndarray,
        tabular: Mapping[str, TabularArrays],
        *,
        sensor_stats: Mapping[str, Mapping[str, Any]] | None = None,
        on_bad_file: str = "missing",
        keep_statistics: bool = False,
    ) -> None:
        if on_bad_file not in ("missing", "error"):
            raise ValueError(f"on_bad_file must be 'missing' or 'error', got {on_bad_file!r}")
        self.spec = spec
        self.records = list(records)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.tabular = dict(tabular)
        self.on_bad_file = on_bad_file
        stats = sensor_stats or {}
        self.readers = {name: file_reader(m, stats.get(name)) for name, m in spec.file_modalities().items()}
        self._kept_statistics: dict[tuple[str, str], SeriesStatistics] | None = (
            {} if keep_statistics else None
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PatientSample:
        record = self.records[index]
        inputs: dict[str, Any] = {}
        errors: dict[str, str] = {}
        skipped: dict[str, dict[str, int]] = {}
        for name, modality in self.spec.modalities.items():
            if modality.kind == "tabular":
                inputs[name] = self._tabular_row(name, index)
            elif modality.kind == "text" and modality.inline:
                text = record.texts.get(name)
                inputs[name] = None if text is None else inline_text(text).text
            else:
                inputs[name] = self._read_file(name, record.paths.get(name), errors)
                if getattr(inputs[name], "skipped", None):
                    skipped[name] = dict(inputs[name].skipped)
        label = int(self.labels[index])
        return PatientSample(index, record.row, record.patient_id, label, inputs, errors, skipped)

    def _tabular_row(self, name: str, index: int) -> dict[str, np.ndarray] | None:
        arrays = self.tabular[name]
        missing = arrays.numeric_missing[index]
        codes = arrays.categorical[index]
        if missing.all() and (codes == 0).all():
            return None
        return {"numeric": arrays.numeric[index], "numeric_missing": missing, "categorical": codes}

    def _read_file(self, name: str, path: str | None, errors: dict[str, str]) -> Any:
        if path is None:
            return None
        kept = self._kept_statistics
        if kept is not None and (name, path) in kept:
            return kept[name, path]
        try:
            decoded = self.readers[name](path)
            if kept is not None and isinstance(decoded, SeriesStatistics):
                kept[name, path] = decoded
            return decoded
        except ReaderError as error:
            if self.on_bad_file == "error":
                raise
            errors[name] = error.reason  # the reason only: file names can carry patient ids
        except (OSError, ValueError, RuntimeError, MemoryError) as error:
            # A reader bug or an exotic file must fail this modality, not the whole run.
            if self.on_bad_file == "error":
                raise ReaderError(path, f"could not be read ({error.__class__.__name__})") from error
            errors[name] = f"could not be read ({error.__class__.__name__})"
        return None


class PatientCollator:
    """Collate :class:`PatientSample` lists into a :class:`Batch`, one encoder ``collate`` per modality."""

    def __init__(self, encoders: Mapping[str, Any]) -> None:
        self.encoders = dict(encoders)

    def __call__(self, samples: Sequence[PatientSample]) -> Batch:
        with torch.no_grad():
            inputs = {}
            for name, encoder in self.encoders.items():
                reads = [s.inputs[name] for s in samples]
                inputs[name] = encoder.collate(reads)
                width = getattr(encoder, "summary_width", None)
                if width is not None:  # a model's trees read this modality's per-file summaries
                    inputs[name].tensors["summary"] = encoder.summary_tensor(reads, width)
        return Batch(
            inputs=inputs,
            labels=torch.tensor([s.label for s in samples], dtype=torch.long),
            indices=torch.tensor([s.index for s in samples], dtype=torch.long),
            rows=[s.row for s in samples],
            patient_ids=[s.patient_id for s in samples],
            errors=[s.errors for s in samples],
        )
