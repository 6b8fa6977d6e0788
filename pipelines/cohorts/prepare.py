"""Turning a validated cohort into model-ready parts: labels, splits and fitted preprocessing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_schemas import PatientRecord
from encoders.numeric_embedding import DEFAULT_BINS, implausible_counts, quantile_edges
from encoders.readers import ReaderError, TabularArrays, TabularPreprocessor
from encoders.readers.tabular_files import numeric_column
from encoders.sensor_variables import SERIES_STATISTICS, series_statistics
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import UNLABELLED, CohortDataset, label_index, read_sensor_file
from pipelines.cohorts.spec_io import SpecError
from pipelines.cohorts.validate import validate_cohort

VALUE_STATISTICS = ("first", "last", "min", "max", "mean")
WAVEFORM_MIN_RATE_HZ = 1.0
"""A sensor modality sampled at least this fast is a waveform (time-window tokens); slower series
are measurements (per-variable statistic tokens)."""


class CohortError(ValueError):
    """A cohort that passes validation but cannot be trained on (one class, too few patients)."""


@dataclass
class PreparedCohort:
    """A cohort ready for datasets.

    Attributes:
        records: every labelled patient, in table order.
        labels: (N,) class index per record.
        splits: (N,) ``"train"``, ``"val"`` or ``"test"`` per record.
        classes: class labels in output order (binary: negative, positive).
        preprocessing: the JSON-able state fitted on the training split (``preprocessing.json``).
        tabular: per tabular modality, the transformed arrays of ``records``.
    """

    cohort: Cohort
    records: list[PatientRecord]
    labels: np.ndarray
    splits: np.ndarray
    classes: list[str]
    preprocessing: dict[str, Any]
    tabular: dict[str, TabularArrays]
    unlabelled: int

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def dataset(self, split: str | None = None, *, on_bad_file: str = "missing") -> CohortDataset:
        """The patients of one split (all labelled patients when ``split`` is None)."""
        chosen = np.arange(len(self.records)) if split is None else self.indices(split)
        return CohortDataset(
            self.cohort.spec,
            [self.records[i] for i in chosen],
            self.labels[chosen],
            {name: _take(arrays, chosen) for name, arrays in self.tabular.items()},
            sensor_stats=self.preprocessing["sensor"],
            on_bad_file=on_bad_file,
            keep_statistics=True,
        )


def _take(arrays: TabularArrays, rows: np.ndarray) -> TabularArrays:
    return TabularArrays(
        arrays.numeric[rows], arrays.numeric_missing[rows], arrays.categorical[rows], arrays.names
    )


def output_classes(cohort: Cohort, records: Sequence[PatientRecord]) -> list[str]:
    outcome = cohort.spec.outcome
    if outcome.task == "binary":
        positive = outcome.positive_label()
        return [next(c for c in outcome.class_labels() if c != positive), positive]
    declared = outcome.class_labels()
    return declared if declared is not None else sorted({r.outcome for r in records if r.outcome is not None})


def validated_cohort(spec_path: str | Path) -> Cohort:
    """The cohort at ``spec_path`` once it passes ``deepwe validate``.

    Raises:
        SpecError: every problem ``deepwe validate`` finds.
    """
    report = validate_cohort(spec_path)
    if report.cohort is None:
        raise SpecError(report.problems)
    return report.cohort


def sensor_tokens(modality: Any, choice: str | None = None) -> str:
    """``"windows"`` or ``"variables"``: ``choice`` when given, else by the modality's grid rate."""
    if choice is not None:
        return choice
    return "windows" if modality.rate_hz >= WAVEFORM_MIN_RATE_HZ else "variables"


def prepare_cohort(
    cohort: Cohort,
    *,
    text_cache: str | None = None,
    sensor_token_choice: str | None = None,
    sensor_trajectory: bool = True,
    bins: int = DEFAULT_BINS,
) -> PreparedCohort:
    """Labels, splits and preprocessing fitted on the training split only.

    Args:
        sensor_token_choice: ``"windows"`` or ``"variables"`` for every sensor modality; None
            chooses by grid rate (:func:`sensor_tokens`).
        sensor_trajectory: per-variable sensor tokens also read each channel's measurements
            (trajectory tokens): the readers then keep them.
        bins: quantile bins of the numerical embeddings.

    Raises:
        CohortError: no outcome in the spec, one outcome class in the training split, or an empty
            training or validation split.
    """
    spec = cohort.spec
    if spec.outcome is None:
        raise CohortError(f"{cohort.spec_path}: the spec has no outcome; training needs one")
    every = list(cohort.records())
    records = [r for r in every if r.outcome is not None]
    classes = output_classes(cohort, records)
    to_index = label_index(spec, classes)
    labels = np.array([to_index(r.outcome) for r in records], dtype=np.int64)
    splits = np.array([r.split for r in records])
    train = splits == "train"
    _check_splits(cohort, labels, splits, classes)
    table = cohort.table.iloc[[r.row - 1 for r in records]].reset_index(drop=True)
    preprocessing: dict[str, Any] = {
        "classes": classes,
        "tabular": {},
        "sensor": {},
        "numeric_edges": {},
        "never_observed": {},
        "implausible": {},
        "text_cache": text_cache,
    }
    tabular = {}
    training = [records[i] for i in np.flatnonzero(train)]
    for name, modality in spec.modalities.items():
        if modality.kind == "tabular":
            numeric, categorical = _observed_columns(table[train], modality.numeric, modality.categorical)
            dropped = [
                c for c in (*modality.numeric, *modality.categorical) if c not in (*numeric, *categorical)
            ]
            if not numeric and not categorical:
                raise CohortError(
                    f"{cohort.spec_path}: modality {name!r} has no value in any training row; "
                    "a model cannot learn from it"
                )
            preprocessor = TabularPreprocessor(numeric, categorical).fit(table[train])
            preprocessing["tabular"][name] = preprocessor.to_dict()
            tabular[name] = preprocessor.transform(table)
            observed = np.where(tabular[name].numeric_missing, np.nan, tabular[name].numeric)[train]
            preprocessing["numeric_edges"][name] = quantile_edges(observed, bins).tolist()
            raw = np.stack([numeric_column(table[train][c])[0] for c in numeric], axis=1) if numeric else None
            preprocessing["implausible"][name] = _named_counts(numeric, raw)
            preprocessing["never_observed"][name] = dropped
        elif modality.kind == "sensor":
            tokens = sensor_tokens(modality, sensor_token_choice)
            preprocessing["sensor"][name] = _sensor_stats(name, modality, training, tokens, bins)
            if tokens == "variables":
                preprocessing["sensor"][name]["trajectory"] = sensor_trajectory
                preprocessing["numeric_edges"][name] = preprocessing["sensor"][name].pop("edges")
                preprocessing["implausible"][name] = preprocessing["sensor"][name].pop("implausible")
    return PreparedCohort(
        cohort, records, labels, splits, classes, preprocessing, tabular, len(every) - len(records)
    )


def tabular_arrays(preprocessing: Mapping[str, Any], table: pd.DataFrame) -> dict[str, TabularArrays]:
    """Transform ``table`` with the tabular preprocessors of a bundle."""
    return {
        name: TabularPreprocessor.from_dict(state).transform(table)
        for name, state in preprocessing["tabular"].items()
    }


def _check_splits(cohort: Cohort, labels: np.ndarray, splits: np.ndarray, classes: list[str]) -> None:
    where = str(cohort.spec_path)
    for split in ("train", "val"):
        if not (splits == split).any():
            raise CohortError(
                f"{where}: the {split} split is empty; at least a few patients are needed in it"
            )
    train_classes = np.unique(labels[splits == "train"])
    if len(train_classes) < 2:
        raise CohortError(
            f"{where}: the training split has only outcome {classes[int(train_classes[0])]!r}; "
            "a model needs at least two classes"
        )
    if (splits == "train").sum() < 8:
        raise CohortError(
            f"{where}: {(splits == 'train').sum()} training patients are too few (need at least 8)"
        )


def _observed_columns(
    train: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The columns with at least one value in the training rows (the others would get untrained
    embeddings that a later cohort filling them would switch on)."""

    def seen(column: str) -> bool:
        cells = train[column]
        return bool((cells.notna() & (cells.astype(str).str.strip() != "")).any())

    return [c for c in numeric if seen(c)], [c for c in categorical if seen(c)]


def _named_counts(names: Sequence[str], values: np.ndarray | None) -> dict[str, int]:
    """Variable -> how many training values are implausible (only the variables with any)."""
    if values is None:
        return {}
    return {name: int(n) for name, n in zip(names, implausible_counts(values), strict=True) if n}


def _sensor_stats(
    name: str, modality: Any, records: Sequence[PatientRecord], tokens: str, bins: int
) -> dict[str, Any]:
    """What a sensor modality's encoder needs from every training file.

    Per channel the mean and std of the observed samples (channels never observed get 0 and 1), the
    grid length in cells (from ``duration_s``, else the longest file) and, for per-variable tokens,
    the quantile edges of every (channel, statistic) and the implausible-value counts.
    """
    channels = len(modality.channels)
    total, squares, count = np.zeros(channels), np.zeros(channels), np.zeros(channels)
    longest, read, statistics = 1, 0, []
    paths = [r.paths[name] for r in records if r.paths.get(name)]
    for path in paths:
        try:
            array = read_sensor_file(path, modality)
        except ReaderError:
            continue
        read += 1
        values = np.where(array.observed, array.values, 0.0).astype(np.float64)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        count += array.observed.sum(axis=0)
        longest = max(longest, array.values.shape[0])
        if tokens == "variables":
            stats = series_statistics(array)
            statistics.append(np.where(stats.observed, stats.values, np.nan).reshape(-1))
    mean = np.divide(total, count, out=np.zeros(channels), where=count > 0)
    variance = np.divide(squares, count, out=np.ones(channels), where=count > 0) - mean**2
    std = np.sqrt(np.clip(variance, 0, None))
    std = np.where((count > 1) & (std > 1e-8), std, 1.0)
    cells = (
        int(np.ceil(modality.duration_s * modality.rate_hz)) if modality.duration_s is not None else longest
    )
    stats: dict[str, Any] = {
        "tokens": tokens,
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
        "cells": cells,
        "files": read,
        "never_observed": [c for c, n in zip(modality.channels, count, strict=True) if n == 0],
    }
    if tokens == "variables":
        table = (
            np.stack(statistics) if statistics else np.full((0, channels * len(SERIES_STATISTICS)), np.nan)
        )
        stats["edges"] = quantile_edges(table, bins).tolist()
        # Only statistics in the channel's own units can be implausible; a slope or a time since the
        # last measurement is heavy-tailed by nature.
        values = [
            i
            for i, (_, s) in enumerate((c, s) for c in modality.channels for s in SERIES_STATISTICS)
            if s in VALUE_STATISTICS
        ]
        names = [f"{c} ({s})" for c in modality.channels for s in SERIES_STATISTICS]
        stats["implausible"] = _named_counts(
            [names[i] for i in values], table[:, values] if len(table) else None
        )
    return stats


__all__ = [
    "UNLABELLED",
    "CohortError",
    "PreparedCohort",
    "prepare_cohort",
    "tabular_arrays",
    "validated_cohort",
]
