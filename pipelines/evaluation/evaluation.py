"""The numbers behind ``deepwe evaluate`` and the audit report.

For a binary outcome: AUROC and AUPRC with percentile bootstrap confidence intervals overall, per
value of every subgroup column of the spec and per missing-modality pattern; calibration (reliability
bins, ECE, Brier, slope, intercept) after temperature scaling and before it; a decision curve; and the
decision threshold's confusion matrix. For a multiclass outcome only the overall macro one-vs-rest
AUROC with its interval is computed; the other blocks stay empty and a note says so.

Everything returned is plain dataclasses of floats, ints, strings and lists; ``Evaluation.to_dict()``
is JSON-safe (NaN and infinities become None). Nothing here plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from data_schemas.cohort_spec import SPLIT_VALUES, canonical_label
from pipelines.cohorts.cohort_table import Cohort, is_missing
from pipelines.cohorts.dataset import label_index
from pipelines.common.json_values import finite
from pipelines.evaluation.metrics import (
    average_precision,
    bootstrap_ci,
    brier,
    calibration_slope_intercept,
    clipped_logit,
    confusion_at,
    expected_calibration_error,
    multiclass_auroc,
    net_benefit,
    rank_auroc,
    reliability_bins,
)

MIN_GROUP_SIZE = 10
CALIBRATION_BINS = 10
DECISION_THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)
DEFAULT_THRESHOLD = 0.5  # what ``deepwe predict`` labels with when the bundle has no threshold
MISSING_GROUP = "(missing)"
NO_MODALITY = "none"
PATTERN_GROUP = "modalities"


@dataclass
class Interval:
    """A point estimate with its percentile bootstrap interval (NaN where undefined)."""

    estimate: float
    low: float
    high: float


def format_interval(interval: Interval | None) -> str:
    """``0.812 (0.771-0.850)`` for an estimate with its interval; ``–`` when undefined."""
    if interval is None or interval.estimate is None or math.isnan(interval.estimate):
        return "–"
    return f"{interval.estimate:.3f} ({interval.low:.3f}-{interval.high:.3f})"


@dataclass
class GroupMetrics:
    """Discrimination in one slice of the patients.

    Attributes:
        group: the subgroup column (``sex``), or ``modalities`` for a missing-modality pattern.
        value: the column's value (``F``; ``(missing)`` for a blank cell) or the pattern: the sorted
            names of the present modalities joined by ``+`` (``labs+notes``).
        reason: why the metrics are NaN (fewer than 10 patients, one outcome class), else None.
    """

    group: str
    value: str
    n: int
    positives: int
    auroc: Interval
    auprc: Interval
    reason: str | None = None


@dataclass
class ReliabilityBin:
    """One equal-width bin of the reliability diagram (mean risk and observed rate NaN when empty)."""

    lower: float
    upper: float
    mean_risk: float
    observed_rate: float
    count: int


@dataclass
class Calibration:
    """Calibration of one risk. Slope: logistic regression of the label on logit(risk); intercept:
    calibration-in-the-large (logit(risk) as an offset, slope fixed at 1). Ideal: slope 1, intercept 0."""

    bins: list[ReliabilityBin]
    ece: float
    brier: float
    slope: float
    intercept: float


@dataclass
class DecisionCurve:
    """Net benefit (Vickers & Elkin 2006) at each threshold: the model, treat-all and treat-none (K,)."""

    thresholds: list[float]
    model: list[float]
    treat_all: list[float]
    treat_none: list[float]


@dataclass
class ThresholdMetrics:
    """The decision threshold (positive = risk >= threshold) with its confusion matrix and rates."""

    threshold: float
    source: str
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    specificity: float
    ppv: float
    npv: float


@dataclass
class Evaluation:
    """Every number of the evaluation report.

    Attributes:
        task: ``binary`` or ``multiclass``.
        split: the split evaluated, or None for every labelled row.
        n: patients evaluated (status ``ok``, outcome present, in ``split``).
        positives: positive patients (binary), else None.
        classes: class labels in the model's output order (binary: negative, positive).
        excluded: prediction rows left out, by reason: ``error`` (status not ok), ``unlabelled`` (no
            outcome), ``unknown_outcome`` (multiclass value the model does not know), ``outside_split``.
        auroc: overall AUROC (binary) or macro one-vs-rest AUROC (multiclass).
        auprc: overall AUPRC (binary), else None.
        subgroups: one entry per value of every subgroup column (binary).
        modality_patterns: one entry per missing-modality pattern (binary).
        calibration: ``after`` (the calibrated risk) and ``before`` temperature scaling (binary).
        notes: plain-language remarks (fallbacks, small samples, what was skipped).
    """

    task: str
    split: str | None
    n: int
    positives: int | None
    classes: list[str]
    temperature: float
    n_boot: int
    level: float
    excluded: dict[str, int]
    auroc: Interval
    auprc: Interval | None = None
    subgroups: list[GroupMetrics] = field(default_factory=list)
    modality_patterns: list[GroupMetrics] = field(default_factory=list)
    calibration: dict[str, Calibration] = field(default_factory=dict)
    decision_curve: DecisionCurve | None = None
    threshold: ThresholdMetrics | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: NaN and infinities are None, numpy scalars are Python numbers."""
        return finite(asdict(self))


def uncalibrated_risk(risk: np.ndarray, temperature: float, shift: float = 0.0) -> np.ndarray:
    """The positive risk before calibration: ``sigmoid(T * logit(risk) - s)``.

    For two classes ``softmax((z + s e_1) / T)[1] = sigmoid((z1 + s - z0) / T)``, so multiplying the
    calibrated logit by T and taking the shift s off recovers the raw one. Risks are clipped to
    [1e-7, 1 - 1e-7] first. ``risk``: any shape.
    """
    return expit(temperature * clipped_logit(risk) - shift)


def calibrated_risk(raw: np.ndarray, temperature: float, shift: float = 0.0) -> np.ndarray:
    """The inverse of :func:`uncalibrated_risk`: ``sigmoid((logit(raw) + s) / T)``. ``raw``: any shape."""
    return expit((clipped_logit(raw) + shift) / temperature)


def calibration(labels: np.ndarray, risk: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability bins, ECE, Brier score, calibration slope and intercept of a binary risk.

    Args:
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.
    """
    table = reliability_bins(labels, risk, bins)
    slope, intercept = calibration_slope_intercept(labels, risk)
    return Calibration(
        bins=[
            ReliabilityBin(
                lower=float(table["lower"][b]),
                upper=float(table["upper"][b]),
                mean_risk=float(table["mean_risk"][b]),
                observed_rate=float(table["observed"][b]),
                count=int(table["count"][b]),
            )
            for b in range(bins)
        ],
        ece=expected_calibration_error(labels, risk, bins),
        brier=brier(labels, risk),
        slope=slope,
        intercept=intercept,
    )


def decision_curve(
    labels: np.ndarray, risk: np.ndarray, thresholds: np.ndarray = DECISION_THRESHOLDS
) -> DecisionCurve:
    """Net benefit of the model, of treating everyone and of treating no one at each threshold.

    Args:
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.
        thresholds: (K,) in [0, 1); 0.01 to 0.99 by 0.01 by default.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    return DecisionCurve(
        thresholds=thresholds.tolist(),
        model=net_benefit(labels, risk, thresholds).tolist(),
        treat_all=net_benefit(labels, np.ones(len(labels)), thresholds).tolist(),
        treat_none=np.zeros(len(thresholds)).tolist(),
    )


def threshold_metrics(labels: np.ndarray, risk: np.ndarray, threshold: float | None) -> ThresholdMetrics:
    """The confusion matrix and rates at ``threshold`` (0.5, as predictions use, when None)."""
    source = "bundle" if threshold is not None else f"default {DEFAULT_THRESHOLD} (the bundle has none)"
    value = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    return ThresholdMetrics(threshold=value, source=source, **confusion_at(labels, risk, value))


def _interval(values: tuple[float, float, float]) -> Interval:
    return Interval(*values)


def _nan_interval() -> Interval:
    return Interval(math.nan, math.nan, math.nan)


def _one_class_reason(labels: np.ndarray) -> str | None:
    if labels.size and labels.min() == labels.max():
        return f"only one outcome class ({'all positive' if labels[0] else 'all negative'})"
    return None


def group_metrics(
    group: str,
    keys: Sequence[str],
    labels: np.ndarray,
    risk: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[GroupMetrics]:
    """AUROC and AUPRC with intervals for each distinct key, sorted by key.

    A slice with fewer than 10 patients or a single outcome class gets NaN metrics and a reason.

    Args:
        group: the name of the slicing (a subgroup column, or ``modalities``).
        keys: (N,) the slice of each patient.
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.
    """
    keys = np.asarray(keys, dtype=object)
    results = []
    for key in sorted(set(keys.tolist())):
        chosen = keys == key
        y, r = labels[chosen], risk[chosen]
        reason = f"fewer than {MIN_GROUP_SIZE} patients" if y.size < MIN_GROUP_SIZE else _one_class_reason(y)
        if reason is None:
            auroc = _interval(bootstrap_ci(y, r, rank_auroc, n_boot, seed, level))
            auprc = _interval(bootstrap_ci(y, r, average_precision, n_boot, seed, level))
        else:
            auroc, auprc = _nan_interval(), _nan_interval()
        results.append(GroupMetrics(group, str(key), int(y.size), int(y.sum()), auroc, auprc, reason))
    return results


def modality_pattern(present: Mapping[str, bool]) -> str:
    """``labs+notes``: the sorted names of the present modalities joined by ``+`` (``none`` if none)."""
    names = sorted(name for name, flag in present.items() if flag)
    return "+".join(names) if names else NO_MODALITY


@dataclass
class _Joined:
    """The evaluated patients: predictions joined to their cohort rows."""

    rows: pd.DataFrame  # (N rows) the chosen prediction rows
    labels: np.ndarray  # (N,) class index of each
    classes: list[str]
    split: str | None
    excluded: dict[str, int]
    notes: list[str]


def _parse_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _model_classes(ok: pd.DataFrame, given: Sequence[str] | None) -> list[str] | None:
    if given is not None:
        return list(given)
    if "probabilities" not in ok.columns:
        return None
    for value in ok["probabilities"]:
        parsed = _parse_json(value)
        if parsed:
            return list(parsed)
    return None


def _check_rows(predictions: pd.DataFrame, cohort: Cohort, needed: Sequence[str]) -> None:
    missing = [c for c in ("row", "patient_id", "status", *needed) if c not in predictions.columns]
    if missing:
        raise ValueError(f"the predictions lack the column(s) {missing}; expected a `deepwe predict` output")
    rows = predictions["row"].to_numpy()
    if len(set(rows.tolist())) != len(rows):
        raise ValueError("the predictions repeat some rows (unmerged shards?); expected each row once")
    outside = [int(r) for r in rows if not 1 <= r <= len(cohort.table)][:10]
    if outside:
        raise ValueError(
            f"prediction rows {outside} are outside the cohort table's 1..{len(cohort.table)}; "
            "were the predictions made on another cohort?"
        )
    ids = cohort.table[cohort.spec.id].to_numpy()
    differ = [
        int(r)
        for r, pid in zip(rows, predictions["patient_id"], strict=True)
        if canonical_label(pid) != canonical_label(ids[int(r) - 1])
    ][:10]
    if differ:
        raise ValueError(
            f"the patient id of prediction rows {differ} differs from the cohort table's; "
            "were the predictions made on another cohort or an edited table?"
        )


def _join(
    predictions: pd.DataFrame, cohort: Cohort, split: str | None, classes: Sequence[str] | None
) -> _Joined:
    outcome = cohort.spec.outcome
    if outcome is None:
        raise ValueError(f"{cohort.spec_path}: the spec has no outcome; evaluation needs one")
    if outcome.column not in cohort.table.columns:
        raise ValueError(f"{cohort.table_path}: no outcome column {outcome.column!r}")
    if split is not None and split not in SPLIT_VALUES:
        raise ValueError(f"split must be one of {list(SPLIT_VALUES)} or None, got {split!r}")
    needed = ("risk", "modality_present") if outcome.task == "binary" else ("probabilities",)
    _check_rows(predictions, cohort, needed)
    excluded = {"error": 0, "unlabelled": 0, "unknown_outcome": 0, "outside_split": 0}
    ok = predictions[predictions["status"] == "ok"]
    excluded["error"] = len(predictions) - len(ok)
    model_classes = _model_classes(ok, classes)
    if outcome.task == "binary":
        positive = outcome.positive_label()
        if model_classes is not None and (len(model_classes) != 2 or model_classes[1] != positive):
            raise ValueError(
                f"the predictions' classes are {model_classes}; the cohort's binary outcome needs "
                f"[negative, {positive!r}] (was the model trained on this outcome?)"
            )
        classes = model_classes or [next(c for c in outcome.class_labels() if c != positive), positive]
    elif model_classes is None:
        raise ValueError("multiclass predictions need their classes (a `probabilities` column or `classes=`)")
    else:
        classes = model_classes
    to_index = label_index(cohort.spec, classes)
    labels, keep, splits = [], [], []
    for position, row in enumerate(ok["row"].to_numpy()):
        cell = cohort.table.at[int(row) - 1, outcome.column]
        if is_missing(cell):
            excluded["unlabelled"] += 1
            continue
        try:
            labels.append(to_index(canonical_label(cell)))
        except KeyError:
            excluded["unknown_outcome"] += 1
            continue
        keep.append(position)
        splits.append(cohort.split_of(int(row)))
    rows, labels, splits = ok.iloc[keep].reset_index(drop=True), np.array(labels, dtype=int), np.array(splits)
    if not len(rows):
        raise ValueError(
            f"no prediction row is both ok and labelled ({excluded['error']} error rows, "
            f"{excluded['unlabelled']} without an outcome, {excluded['unknown_outcome']} with an unknown one)"
        )
    notes = []
    chosen = np.ones(len(rows), dtype=bool) if split is None else splits == split
    if split is not None and not chosen.any():
        notes.append(f"no labelled patients in the {split!r} split; every labelled patient is evaluated")
        split, chosen = None, np.ones(len(rows), dtype=bool)
    excluded["outside_split"] = int((~chosen).sum())
    return _Joined(rows[chosen].reset_index(drop=True), labels[chosen], classes, split, excluded, notes)


def evaluate_predictions(
    predictions: pd.DataFrame,
    cohort: Cohort,
    *,
    temperature: float,
    threshold: float | None,
    logit_shift: float = 0.0,
    split: str | None = "test",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    classes: Sequence[str] | None = None,
) -> Evaluation:
    """Evaluate a ``deepwe predict`` table against the outcomes of its cohort.

    Prediction rows join to cohort rows by their 1-based ``row`` (the patient ids must agree). Only
    rows with status ``ok`` and an outcome count; the others are counted in ``excluded``.

    Args:
        predictions: the table from :func:`pipelines.inference.output_table.read_predictions`.
        cohort: the cohort the predictions were made on (with its outcome column).
        temperature: the bundle's calibration temperature (``Bundle.temperature``).
        logit_shift: the bundle's calibration shift of the positive logit (``Bundle.logit_shift``).
        threshold: the bundle's decision threshold (``Bundle.threshold``); None means 0.5.
        split: evaluate this split only (``test`` by default); None evaluates every labelled row. A
            split with no labelled rows falls back to every labelled row, with a note.
        n_boot: bootstrap resamples per interval.
        seed: the bootstrap's random seed.
        level: the intervals' coverage.
        classes: the model's classes in output order (``Bundle.classes``); taken from the
            predictions' ``probabilities`` when None.

    Raises:
        ValueError: the cohort has no outcome, or the predictions do not belong to this cohort.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    joined = _join(predictions, cohort, split, classes)
    labels, rows, notes = joined.labels, joined.rows, joined.notes
    task = cohort.spec.outcome.task
    common = {
        "task": task,
        "split": joined.split,
        "n": len(labels),
        "classes": joined.classes,
        "temperature": float(temperature),
        "n_boot": n_boot,
        "level": level,
        "excluded": joined.excluded,
        "notes": notes,
    }
    if len(labels) < MIN_GROUP_SIZE:
        notes.append(f"only {len(labels)} patients evaluated: the intervals are very wide or undefined")
    if task == "multiclass":
        notes.append("multiclass outcome: only the overall macro one-vs-rest AUROC is reported")
        probabilities = np.array(
            [[float(_parse_json(p)[c]) for c in joined.classes] for p in rows["probabilities"]]
        ).reshape(len(rows), len(joined.classes))
        auroc = bootstrap_ci(labels, probabilities, multiclass_auroc, n_boot, seed, level)
        return Evaluation(positives=None, auroc=_interval(auroc), **common)
    risk = rows["risk"].to_numpy(dtype=float)
    if np.isnan(risk).any():
        raise ValueError("some ok prediction rows have no risk; were they made by a binary model?")
    reason = _one_class_reason(labels)
    if reason is not None:
        notes.append(f"AUROC and AUPRC are undefined: {reason}")
    boot = {"n_boot": n_boot, "seed": seed, "level": level}
    subgroups = []
    for column in cohort.spec.subgroups:
        if column not in cohort.table.columns:
            notes.append(f"subgroup column {column!r} is not in the table; skipped")
            continue
        cells = cohort.table[column].to_numpy()[rows["row"].to_numpy(dtype=int) - 1]
        keys = [MISSING_GROUP if is_missing(c) else str(c).strip() for c in cells]
        subgroups += group_metrics(column, keys, labels, risk, **boot)
    patterns = [modality_pattern(_parse_json(p) or {}) for p in rows["modality_present"]]
    return Evaluation(
        positives=int(labels.sum()),
        auroc=_interval(bootstrap_ci(labels, risk, rank_auroc, n_boot, seed, level)),
        auprc=_interval(bootstrap_ci(labels, risk, average_precision, n_boot, seed, level)),
        subgroups=subgroups,
        modality_patterns=group_metrics(PATTERN_GROUP, patterns, labels, risk, **boot),
        calibration={
            "after": calibration(labels, risk),
            "before": calibration(labels, uncalibrated_risk(risk, temperature, logit_shift)),
        },
        decision_curve=decision_curve(labels, risk),
        threshold=threshold_metrics(labels, risk, threshold),
        **common,
    )
