"""Tables the pages show, shaped from prediction rows and explanations (pandas only, no Streamlit).

A prediction table is what ``deepwe predict`` writes (:func:`pipelines.inference.output_table.record_to_row` rows):
nested fields as JSON text, ``present_<m>`` and ``weight_<m>`` columns per modality.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from data_schemas.cohort_spec import canonical_label
from pipelines.cohorts.cohort_table import Cohort, is_missing
from pipelines.explanations.patient_explanation import PatientExplanation

NONE_MISSING = "—"


def parse_json(value: Any) -> Any:
    """A JSON cell as Python (None for a blank cell); already-parsed values pass through."""
    if isinstance(value, str):
        return json.loads(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _present(predictions: pd.DataFrame, modality: str) -> np.ndarray:
    """(N,) bool: the modality was present and readable (False on error rows)."""
    column = predictions.get(f"present_{modality}")
    if column is None:
        return np.zeros(len(predictions), dtype=bool)
    return column.map(lambda v: bool(v) if isinstance(v, bool | np.bool_) else False).to_numpy(dtype=bool)


def cohort_table(predictions: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """One line per patient: id, status, risk, label, out-of-distribution flag, missing and failed
    modalities, and the error of an error row; in table order."""
    frame = predictions.sort_values("row", kind="stable").reset_index(drop=True)
    present = {m: _present(frame, m) for m in modalities}
    errors = [parse_json(v) or {} for v in frame.get("modality_errors", [None] * len(frame))]
    missing = [
        ", ".join(m for m in modalities if not present[m][i] and m not in errors[i]) or NONE_MISSING
        for i in range(len(frame))
    ]
    failed = [", ".join(sorted(e)) or NONE_MISSING for e in errors]
    ood = frame.get("ood", pd.Series([None] * len(frame)))
    return pd.DataFrame(
        {
            "patient_id": frame["patient_id"].astype(str),
            "status": frame["status"].astype(str),
            "risk": pd.to_numeric(frame.get("risk"), errors="coerce"),
            "label": frame["label"].map(lambda v: None if is_missing(v) else canonical_label(v)),
            "out_of_distribution": ood.map(lambda v: bool(v) if isinstance(v, bool | np.bool_) else False),
            "missing": missing,
            "failed_to_load": failed,
            "error": frame.get("error", pd.Series([None] * len(frame))).map(
                lambda v: None if is_missing(v) else str(v)
            ),
        }
    )


def availability(predictions: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """Per modality: patients with it present, their share, and patients whose file failed to load."""
    errors = [parse_json(v) or {} for v in predictions.get("modality_errors", [None] * len(predictions))]
    n = max(1, len(predictions))
    rows = []
    for m in modalities:
        count = int(_present(predictions, m).sum())
        rows.append(
            {
                "modality": m,
                "present": count,
                "present_percent": round(100 * count / n, 1),
                "failed_to_load": sum(m in e for e in errors),
            }
        )
    return pd.DataFrame(rows)


def risk_histogram(risk: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Patients per equal-width risk bin over [0, 1]; ``risk``: (N,), NaN ignored."""
    risk = np.asarray(risk, dtype=float)
    counts, edges = np.histogram(risk[np.isfinite(risk)], bins=bins, range=(0.0, 1.0))
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in itertools.pairwise(edges)]
    return pd.DataFrame({"risk": labels, "patients": counts})


def modality_contributions(explanation: PatientExplanation) -> pd.DataFrame:
    """Per modality of the model: present, the model's modality weight and the Shapley value."""
    prediction = explanation.prediction
    return pd.DataFrame(
        [
            {
                "modality": m,
                "present": bool(prediction.modality_present.get(m, False)),
                "modality_weight": float(prediction.modality_weights.get(m, 0.0)),
                "shapley": float(explanation.shapley.get(m, 0.0)),
            }
            for m in explanation.shapley
        ]
    )


def top_features(explanation: PatientExplanation, n: int = 12) -> pd.DataFrame:
    """The ``n`` tokens with the largest feature weight over every present modality, with their
    attribution and whether the model selected them."""
    rows = [
        {
            "modality": m,
            "token": token,
            "feature_weight": float(w),
            "selected": bool(s),
            "attribution": float(a),
        }
        for m, item in explanation.modalities.items()
        for token, w, s, a in zip(
            item.tokens,
            item.feature_weights.tolist(),
            item.selected.tolist(),
            item.token_attribution.tolist(),
            strict=True,
        )
        if w > 0
    ]
    frame = pd.DataFrame(rows, columns=["modality", "token", "feature_weight", "selected", "attribution"])
    return frame.sort_values("feature_weight", ascending=False, kind="stable").head(n).reset_index(drop=True)


def labelled_risks(
    predictions: pd.DataFrame, cohort: Cohort, positive: str, split: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) 0/1, risk (N,)) of the ok, labelled rows of ``split`` (every split when None)."""
    outcome = cohort.spec.outcome
    if outcome is None or outcome.column not in cohort.table.columns:
        return np.zeros(0, dtype=int), np.zeros(0)
    ok = predictions[predictions["status"] == "ok"]
    labels, risks = [], []
    for row, risk in zip(ok["row"].to_numpy(dtype=int), ok["risk"].to_numpy(dtype=float), strict=True):
        cell = cohort.table.at[row - 1, outcome.column]
        if is_missing(cell) or not math.isfinite(risk):
            continue
        if split is not None and cohort.split_of(row) != split:
            continue
        labels.append(int(canonical_label(cell) == positive))
        risks.append(risk)
    return np.array(labels, dtype=int), np.array(risks, dtype=float)


def roc_pr_points(labels: np.ndarray, risk: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC (``fpr``, ``tpr``) and precision-recall (``recall``, ``precision``) points, each with an
    ``order`` column to draw them in; empty frames when one class is missing."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(np.unique(labels)) < 2:
        return pd.DataFrame(columns=["fpr", "tpr", "order"]), pd.DataFrame(
            columns=["recall", "precision", "order"]
        )
    fpr, tpr, _ = roc_curve(labels, risk)
    precision, recall, _ = precision_recall_curve(labels, risk)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "order": np.arange(len(fpr))})
    pr = pd.DataFrame({"recall": recall, "precision": precision, "order": np.arange(len(recall))})
    return roc, pr


def mean_modality_weights(predictions: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """Per modality: its mean weight over the patients who have it, and over all ok patients."""
    ok = predictions[predictions["status"] == "ok"]
    rows = []
    for m in modalities:
        weights = pd.to_numeric(ok.get(f"weight_{m}"), errors="coerce").to_numpy(dtype=float)
        present = _present(ok, m)
        rows.append(
            {
                "modality": m,
                "mean_weight_when_present": float(np.nanmean(weights[present]))
                if present.any()
                else math.nan,
                "mean_weight_all_patients": float(np.nanmean(weights)) if len(weights) else math.nan,
                "patients_with_it": int(present.sum()),
            }
        )
    return pd.DataFrame(rows)


def frequent_features(predictions: pd.DataFrame, hidden: Sequence[str], n: int = 15) -> pd.DataFrame:
    """How often each token is among a patient's top feature weights, with its mean weight there.

    Args:
        hidden: modalities whose token names are note text (never aggregated across patients).
    """
    counts: dict[tuple[str, str], list[float]] = {}
    for value in predictions.loc[predictions["status"] == "ok", "top_features"]:
        for item in parse_json(value) or []:
            if item["modality"] in hidden:
                continue
            counts.setdefault((item["modality"], item["token"]), []).append(float(item["weight"]))
    rows = [
        {"modality": m, "token": t, "patients": len(w), "mean_weight": float(np.mean(w))}
        for (m, t), w in counts.items()
    ]
    frame = pd.DataFrame(rows, columns=["modality", "token", "patients", "mean_weight"])
    return frame.sort_values(["patients", "mean_weight"], ascending=False).head(n).reset_index(drop=True)
