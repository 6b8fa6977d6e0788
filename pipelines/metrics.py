"""Discrimination and calibration metrics, temperature scaling and the decision threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _one_class(labels: np.ndarray) -> bool:
    return labels.size == 0 or labels.min() == labels.max()


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (binary labels; NaN when only one class is present)."""
    labels = np.asarray(labels)
    return math.nan if _one_class(labels) else float(roc_auc_score(labels, scores))


def multiclass_auroc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``labels``; ``probabilities`` (N, C)."""
    values = [auroc(labels == c, probabilities[:, c]) for c in range(probabilities.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve)."""
    labels = np.asarray(labels)
    return math.nan if _one_class(labels) else float(average_precision_score(labels, scores))


def brier(labels: np.ndarray, risk: np.ndarray) -> float:
    return float(np.mean((np.asarray(risk) - np.asarray(labels)) ** 2))


def expected_calibration_error(labels: np.ndarray, risk: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: the mean |observed rate - mean risk|, weighted by bin size."""
    labels, risk = np.asarray(labels, dtype=float), np.asarray(risk, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(risk, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.mean() * abs(labels[chosen].mean() - risk[chosen].mean())
    return float(total)


def binary_metrics(labels: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC, Brier and ECE of a binary risk."""
    return {
        "auroc": auroc(labels, risk),
        "auprc": auprc(labels, risk),
        "brier": brier(labels, risk),
        "ece": expected_calibration_error(labels, risk),
        "n": len(labels),
        "positives": int(np.sum(labels)),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (Guo et al., ICML 2017).

    Args:
        logits: (N, C) validation logits.
        labels: (N,) class indices.
    """
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps)
    logits, labels = logits.detach().float(), labels.detach().long()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    temperature = float(log_t.detach().exp())
    return temperature if math.isfinite(temperature) and 0.05 < temperature < 20 else 1.0


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on the calibrated risk and how it was chosen."""

    value: float
    rule: str
    sensitivity: float
    specificity: float


def choose_threshold(
    labels: np.ndarray, risk: np.ndarray, *, target_sensitivity: float | None = None
) -> Threshold:
    """Youden's J maximum by default, or the highest threshold reaching ``target_sensitivity``."""
    labels = np.asarray(labels)
    if _one_class(labels):
        return Threshold(0.5, "default 0.5 (validation split has one class)", math.nan, math.nan)
    fpr, tpr, thresholds = roc_curve(labels, risk)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if target_sensitivity is None:
        best = int(np.argmax(tpr - fpr))
        rule = "maximise Youden's J on the validation split"
    else:
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        best = int(reaching[0])
        rule = f"highest threshold with sensitivity >= {target_sensitivity:g} on the validation split"
    # Halfway to the next lower score: the same decisions on the validation split, and no patient's
    # label flips on a rounding difference of a risk that equals the threshold exactly.
    value = thresholds[best] if best + 1 >= len(thresholds) else (thresholds[best] + thresholds[best + 1]) / 2
    return Threshold(float(value), rule, float(tpr[best]), float(1 - fpr[best]))
