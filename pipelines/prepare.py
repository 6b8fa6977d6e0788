"""Turning a validated cohort into model-ready parts: labels, splits and fitted preprocessing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_schemas import PatientRecord
from encoders.readers import ReaderError, TabularArrays, TabularPreprocessor
from pipelines.cohort import Cohort
from pipelines.dataset import UNLABELLED, CohortDataset, label_index, read_sensor_file
from pipelines.spec_io import SpecError
from pipelines.validate import validate_cohort

SENSOR_PROBE_FILES = 200


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


def prepare_cohort(cohort: Cohort, *, text_cache: str | None = None) -> PreparedCohort:
    """Labels, splits and preprocessing fitted on the training split only.

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
        "text_cache": text_cache,
    }
    tabular = {}
    for name, modality in spec.modalities.items():
        if modality.kind == "tabular":
            preprocessor = TabularPreprocessor(modality.numeric, modality.categorical).fit(table[train])
            preprocessing["tabular"][name] = preprocessor.to_dict()
            tabular[name] = preprocessor.transform(table)
        elif modality.kind == "sensor":
            training = [records[i] for i in np.flatnonzero(train)]
            preprocessing["sensor"][name] = _sensor_stats(name, modality, training)
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


def _sensor_stats(name: str, modality: Any, records: Sequence[PatientRecord]) -> dict[str, Any]:
    """Per-channel mean and std over the observed samples of up to ``SENSOR_PROBE_FILES`` training
    files (channels never observed get 0 and 1), and the grid length in cells: from ``duration_s``,
    else the longest probed file."""
    channels = len(modality.channels)
    total, squares, count = np.zeros(channels), np.zeros(channels), np.zeros(channels)
    longest = 1
    paths = [r.paths[name] for r in records if r.paths.get(name)][:SENSOR_PROBE_FILES]
    for path in paths:
        try:
            array = read_sensor_file(path, modality)
        except ReaderError:
            continue
        values = np.where(array.observed, array.values, 0.0).astype(np.float64)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        count += array.observed.sum(axis=0)
        longest = max(longest, array.values.shape[0])
    mean = np.divide(total, count, out=np.zeros(channels), where=count > 0)
    variance = np.divide(squares, count, out=np.ones(channels), where=count > 0) - mean**2
    std = np.sqrt(np.clip(variance, 0, None))
    std = np.where((count > 1) & (std > 1e-8), std, 1.0)
    cells = (
        int(np.ceil(modality.duration_s * modality.rate_hz)) if modality.duration_s is not None else longest
    )
    return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist(), "cells": cells, "files": len(paths)}


__all__ = [
    "UNLABELLED",
    "CohortError",
    "PreparedCohort",
    "prepare_cohort",
    "tabular_arrays",
    "validated_cohort",
]
