"""Discrimination and calibration metrics, temperature scaling and the decision threshold."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
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
    """AUROC, AUPRC, Brier, ECE and calibration slope of a binary risk."""
    return {
        "auroc": auroc(labels, risk),
        "auprc": auprc(labels, risk),
        "brier": brier(labels, risk),
        "ece": expected_calibration_error(labels, risk),
        "calibration_slope": calibration_slope_intercept(labels, risk)[0],
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


def fit_temperature_and_shift(
    logits: torch.Tensor, labels: torch.Tensor, steps: int = 200
) -> tuple[float, float]:
    """Binary calibration: T and a shift s of the positive logit minimising the NLL of
    ``softmax((logits + s e_1) / T)`` — Platt scaling (Platt, 1999) in logit form.

    Temperature alone keeps the intercept, and class-weighted training moves it: weighting the
    rare class by w_1/w_0 shifts the learnt log-odds by about log(w_1/w_0) (the logit-adjustment
    view of Menon et al., ICLR 2021), so risks come out too high at every temperature. The fit is
    ``sigmoid(a * (z1 - z0) + b)`` with the slope a = 1/T kept in [1/20, 20], so that a model whose
    logits carry no signal gets the largest temperature and an intercept at the base rate, instead
    of a failed fit.

    Args:
        logits: (N, 2) validation logits; labels: (N,) 0/1.

    Returns:
        (T, s) with T in [0.05, 20].
    """
    gap = (logits[:, 1] - logits[:, 0]).detach().double()
    target = labels.detach().double()
    low, high = 1 / 20, 20.0
    u = torch.tensor([math.log((1 - low) / (high - 1))], dtype=torch.float64, requires_grad=True)  # a = 1
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([u, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def slope() -> torch.Tensor:
        return low + (high - low) * torch.sigmoid(u)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(slope() * gap + b, target)
        loss.backward()
        return loss

    optimiser.step(closure)
    a, intercept = float(slope().detach()), float(b.detach())
    return 1 / a, intercept / a


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


# Fast equivalents and calibration / decision helpers for the evaluation report. The sklearn-based
# functions above validate their inputs on every call (milliseconds each); a bootstrap calls a metric
# thousands of times, so it uses the plain numpy versions below, which give the same values.

RISK_EPS = 1e-7


def clipped_logit(risk: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of ``risk`` (any shape) clipped to [1e-7, 1 - 1e-7] first."""
    risk = np.clip(np.asarray(risk, dtype=float), RISK_EPS, 1 - RISK_EPS)
    return np.log(risk) - np.log1p(-risk)


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """A metric and its percentile bootstrap interval, resampling patients with replacement.

    Resamples with a single outcome class are skipped (the metric is undefined there), as are
    resamples where the metric is NaN.

    Args:
        labels: (N,) class index per patient.
        scores: (N,) or (N, C) the model's scores, row-aligned with ``labels``.
        metric: ``metric(labels, scores) -> float``.

    Returns:
        (estimate, low, high): the metric on all patients and the interval bounds; the bounds are NaN
        when the estimate is NaN or fewer than two resamples were usable.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    labels, scores = np.asarray(labels), np.asarray(scores)
    estimate = float(metric(labels, scores))
    if not math.isfinite(estimate):
        return estimate, math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(labels), len(labels))
        sample = labels[chosen]
        if sample.min() == sample.max():
            continue
        value = metric(sample, scores[chosen])
        if math.isfinite(value):
            values.append(value)
    if len(values) < 2:
        return estimate, math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(low), float(high)


def rank_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The value of :func:`auroc` as a Mann-Whitney statistic with mid-ranks for ties (plain numpy).

    Args:
        labels: (N,) 0/1 or boolean.
        scores: (N,) higher = more likely positive.
    """
    positive = np.asarray(labels).astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # 1-based mid-ranks: every member of a run of equal scores gets the run's mean rank
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.repeat((starts + ends + 1) / 2, ends - starts)
    return float((ranks[positive[order]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """The value of :func:`auprc`: sum over distinct thresholds of (R_k - R_{k-1}) * P_k (plain numpy).

    Args:
        labels: (N,) 0/1 or boolean.
        scores: (N,) higher = more likely positive.
    """
    positive = np.asarray(labels).astype(bool)
    if positive.size == 0 or positive.all() or not positive.any():
        return math.nan
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    true_positives = np.cumsum(positive[order])
    # tied scores are one threshold: keep the last position of each run of equal scores
    ends = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tp = true_positives[ends]
    precision = tp / (ends + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _bin_index(risk: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each risk, as :func:`expected_calibration_error` bins them."""
    edges = np.linspace(0, 1, bins + 1)
    return np.clip(np.digitize(risk, edges[1:-1]), 0, bins - 1)


def reliability_bins(labels: np.ndarray, risk: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width reliability diagram: per bin its edges, mean risk, observed rate and count.

    Args:
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.

    Returns:
        ``lower``, ``upper``, ``mean_risk``, ``observed``, ``count``: each (bins,); the mean risk and
        observed rate of an empty bin are NaN.
    """
    labels, risk = np.asarray(labels, dtype=float), np.asarray(risk, dtype=float)
    which = _bin_index(risk, bins)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_risk = np.bincount(which, weights=risk, minlength=bins) / count
        observed = np.bincount(which, weights=labels, minlength=bins) / count
    edges = np.linspace(0, 1, bins + 1)
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "mean_risk": mean_risk,
        "observed": observed,
        "count": count,
    }


def _logistic_newton(
    labels: np.ndarray, design: np.ndarray, offset: np.ndarray, steps: int = 100
) -> np.ndarray | None:
    """Unpenalised logistic regression by Newton-Raphson; None when it does not converge (separation).

    Args:
        labels: (N,) 0/1.
        design: (N, P) covariates (include a column of ones for an intercept).
        offset: (N,) fixed term added to the linear predictor.
    """
    beta = np.zeros(design.shape[1])
    for _ in range(steps):
        p = expit(design @ beta + offset)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (labels - p))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            return None
        if np.max(np.abs(step)) < 1e-9:
            return beta
    return None


def calibration_slope_intercept(labels: np.ndarray, risk: np.ndarray) -> tuple[float, float]:
    """Calibration slope and intercept of a binary risk (Van Calster et al., J Clin Epidemiol 2016).

    The slope is b in ``logit P(y=1) = a + b * logit(risk)``; the intercept is calibration-in-the-large,
    a in ``logit P(y=1) = a + logit(risk)`` (slope fixed at 1, logit(risk) as an offset). Perfect
    calibration is slope 1, intercept 0. Risks are clipped to [1e-7, 1 - 1e-7] first. NaN for one class
    or when the fit does not converge (perfectly separated data).

    Args:
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.
    """
    labels = np.asarray(labels, dtype=float)
    if _one_class(labels):
        return math.nan, math.nan
    x = clipped_logit(risk)
    ones = np.ones((labels.size, 1))
    slope_fit = _logistic_newton(labels, np.column_stack([ones, x]), np.zeros_like(x))
    intercept_fit = _logistic_newton(labels, ones, x)
    slope = math.nan if slope_fit is None else float(slope_fit[1])
    intercept = math.nan if intercept_fit is None else float(intercept_fit[0])
    return slope, intercept


def net_benefit(labels: np.ndarray, risk: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating patients with ``risk >= t``: TP/N - FP/N * t / (1 - t) (Vickers & Elkin 2006).

    Args:
        labels: (N,) 0/1.
        risk: (N,) predicted probability of the positive class.
        thresholds: (K,) in [0, 1).

    Returns:
        (K,) net benefit at each threshold.
    """
    labels = np.asarray(labels).astype(bool)
    risk, thresholds = np.asarray(risk, dtype=float), np.asarray(thresholds, dtype=float)
    treated = risk[None, :] >= thresholds[:, None]
    n = max(labels.size, 1)
    tp = (treated & labels[None, :]).sum(axis=1) / n
    fp = (treated & ~labels[None, :]).sum(axis=1) / n
    return tp - fp * thresholds / (1 - thresholds)


def confusion_at(labels: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion matrix (positive = ``risk >= threshold``, as predictions label) and the rates from it.

    Returns:
        ``tp``, ``fp``, ``tn``, ``fn`` counts; ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (NaN
        when their denominator is 0).
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(risk, dtype=float) >= threshold
    tp, fp = int(np.sum(predicted & labels)), int(np.sum(predicted & ~labels))
    tn, fn = int(np.sum(~predicted & ~labels)), int(np.sum(~predicted & labels))

    def ratio(a: int, b: int) -> float:
        return a / (a + b) if a + b else math.nan

    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": ratio(tp, fn),
        "specificity": ratio(tn, fp),
        "ppv": ratio(tp, fp),
        "npv": ratio(tn, fn),
    }
