"""Hand-made summary features of a cohort, for the gradient-boosting and logistic baselines.

One row per patient, one block of columns per modality, each column named ``"<modality>:<feature>"``.
Every value comes from what the project's readers return (:mod:`encoders.readers`), never from a
second parser of the formats. A missing modality, or a file its reader refuses, leaves its whole
block NaN; the baselines deal with NaN themselves (gradient boosting natively, the logistic model
by median imputation).

What each modality kind gives:

- tabular: numeric variables as they are; each categorical variable one-hot over the categories
  of the cohort (all rows: no outcome is looked at).
- sensor, measurement series (grid slower than 1 Hz: vitals, PhysioNet 2012): per channel the
  first, last, min, max and mean value and the count of measurements, over the spec's window, read
  on a one-minute grid (PhysioNet 2012 times are ``HH:MM``, so every distinct measurement time keeps
  its own cell).
- waveforms (sensor streams at 1 Hz or faster), audio, images and text: the numbers of
  :mod:`encoders.summaries`, which the gradient-boosting teacher of training reads too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_schemas import PatientRecord
from encoders.readers import ReaderError, read_audio, read_image, read_sensor, read_text
from encoders.readers.tabular_files import category_key, numeric_column
from encoders.summaries import (
    Features,
    audio_summary,
    image_summary,
    text_summary,
    waveform_summary,
)
from pipelines.cohorts.cohort_table import Cohort

SERIES_STATS = ("first", "last", "min", "max", "mean", "count")
MEASUREMENT_GRID_S = 60.0
WAVEFORM_MIN_RATE_HZ = 1.0


@dataclass(frozen=True)
class SummaryFeatures:
    """The summary features of a cohort.

    Attributes:
        frame: ``(N, F)`` float64 indexed by patient id (table order); NaN where not observed.
        blocks: modality name -> its columns of ``frame``, in spec order.
        unreadable: modality name -> how many of its files the reader refused (their block is NaN).
    """

    frame: pd.DataFrame
    blocks: dict[str, list[str]]
    unreadable: dict[str, int]

    def columns(self, modalities: Sequence[str]) -> list[str]:
        """The columns of ``modalities`` (for a baseline on some modalities only)."""
        unknown = [m for m in modalities if m not in self.blocks]
        if unknown:
            raise ValueError(f"no features for modalities {unknown}; known: {', '.join(self.blocks)}")
        return [c for m in modalities for c in self.blocks[m]]


def series_summary(values: np.ndarray, observed: np.ndarray, channels: Sequence[str]) -> Features:
    """First, last, min, max, mean and count of each channel of a gridded series.

    Args:
        values: ``(T, C)`` cell values (ignored where not observed).
        observed: ``(T, C)`` bool.
        channels: the ``C`` channel names.

    Returns:
        ``"<channel>:<stat>"`` for every stat of :data:`SERIES_STATS`; NaN (count 0) for a channel
        never observed.
    """
    features: Features = {}
    for c, channel in enumerate(channels):
        seen = values[observed[:, c], c].astype(np.float64)
        stats = dict.fromkeys(SERIES_STATS, math.nan)
        if seen.size:
            stats |= {
                "first": seen[0],
                "last": seen[-1],
                "min": seen.min(),
                "max": seen.max(),
                "mean": seen.mean(),
            }
        stats["count"] = float(seen.size)
        features |= {f"{channel}:{stat}": float(value) for stat, value in stats.items()}
    return features


def _tabular_block(cohort: Cohort, name: str) -> pd.DataFrame:
    """Numeric columns as numbers and categorical columns one-hot, ``(N, F)`` with NaN where missing."""
    modality = cohort.spec.modalities[name]
    table = cohort.table
    block: dict[str, np.ndarray] = {}
    for column in modality.numeric:
        block[f"{name}:{column}"] = numeric_column(table[column])[0]
    for column in modality.categorical:
        cells = table[column]
        missing = (
            cells.isna().to_numpy() | cells.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy()
        )
        keys = np.array(
            [None if m else category_key(v) for v, m in zip(cells, missing, strict=True)], dtype=object
        )
        for category in sorted({k for k in keys if k is not None}):
            one_hot = (keys == category).astype(np.float64)
            one_hot[missing] = np.nan
            block[f"{name}:{column}={category}"] = one_hot
    return pd.DataFrame(block, index=table.index)


def _file_summariser(cohort: Cohort, name: str) -> Callable[[str], Features]:
    """The function that reads one file of modality ``name`` and summarises it."""
    modality = cohort.spec.modalities[name]
    if modality.kind == "text":
        return lambda path: text_summary(read_text(path).text)
    if modality.kind == "image":
        return lambda path: image_summary(read_image(path))
    if modality.kind == "audio":
        rate = modality.sample_rate
        return lambda path: audio_summary(
            read_audio(path, sample_rate=rate, duration_s=modality.duration_s), rate
        )
    read = dict(
        time_column=modality.time_column, time_unit=modality.time_unit, duration_s=modality.duration_s
    )
    if modality.rate_hz >= WAVEFORM_MIN_RATE_HZ:

        def waveform(path: str) -> Features:
            array = read_sensor(path, channels=modality.channels, rate_hz=modality.rate_hz, **read)
            return waveform_summary(array.values, array.observed, array.channels, array.rate_hz)

        return waveform
    grid_rate = max(modality.rate_hz, 1.0 / MEASUREMENT_GRID_S)

    def series(path: str) -> Features:
        array = read_sensor(path, channels=modality.channels, rate_hz=grid_rate, **read)
        return series_summary(array.values, array.observed, array.channels)

    return series


def _file_block(
    cohort: Cohort, name: str, records: Sequence[PatientRecord], unreadable: Counter
) -> pd.DataFrame:
    summarise = _file_summariser(cohort, name)
    rows: list[Features] = []
    for record in records:
        path = record.paths.get(name)
        features: Features = {}
        if path is not None:
            try:
                features = summarise(path)
            except ReaderError:
                unreadable[name] += 1
        rows.append(features)
    block = pd.DataFrame(rows, index=cohort.table.index, dtype=np.float64)
    return block.rename(columns=lambda column: f"{name}:{column}")


def cohort_features(cohort: Cohort, modalities: Sequence[str] | None = None) -> SummaryFeatures:
    """Summary features of every patient of ``cohort``, for ``modalities`` (default: all, spec order).

    Raises:
        ValueError: a name in ``modalities`` is not a modality of the spec.
    """
    names = list(cohort.spec.modalities) if modalities is None else list(modalities)
    unknown = [n for n in names if n not in cohort.spec.modalities]
    if unknown:
        raise ValueError(
            f"{cohort.spec_path}: no modalities {unknown}; the spec has {list(cohort.spec.modalities)}"
        )
    records = list(cohort.records())
    unreadable: Counter = Counter()
    parts, blocks = [], {}
    for name in names:
        if cohort.spec.modalities[name].kind == "tabular":
            block = _tabular_block(cohort, name)
        else:
            block = _file_block(cohort, name, records, unreadable)
        parts.append(block)
        blocks[name] = list(block.columns)
    frame = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=cohort.table.index)
    frame.index = pd.Index([r.patient_id for r in records], name=cohort.spec.id)
    return SummaryFeatures(
        frame.astype(np.float64), blocks, {n: unreadable[n] for n in names if unreadable[n]}
    )
