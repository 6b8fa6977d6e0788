"""Figures for explanations and the audit report, rendered to PNG bytes.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, so it is safe in
threads and needs no backend switch) and returns the PNG at a fixed resolution with a tight bounding box.
Inputs are numpy arrays or lists; nothing here knows about models, encoders or files.

Colours come from :mod:`explain.palette`, highlights from :mod:`explain.highlight`: red pushes the
prediction towards the outcome, blue away from it.
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from explain.highlight import normalised_magnitude, saliency_rgb
from explain.palette import AWAY, NEUTRAL, TOWARDS

DPI = 110
BEFORE = NEUTRAL
MAX_PATTERNS = 20
MAX_CHANNELS = 8
# BERT-style markers carry no words of the note; showing them would only confuse a clinician.


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the bytes then depend on the picture, not on the matplotlib version.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """The PNG as a ``data:image/png;base64,...`` URI, for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _float(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def reliability_diagram(
    bins_before: Sequence[Mapping[str, float]], bins_after: Sequence[Mapping[str, float]]
) -> bytes:
    """Calibration before and after recalibration, with the number of patients per bin below.

    Args:
        bins_before: One dict per risk bin, ``{"mean_risk", "observed", "count"}``, in order of equal-width
            bins over [0, 1] (10 bins usually). Empty bins may carry NaN or None for the rates.
        bins_after: The same after calibration (temperature scaling).

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=(5.4, 5.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="#444444", linewidth=1, label="perfect calibration")
    for bins, name, colour, marker in (
        (bins_before, "before calibration", BEFORE, "s"),
        (bins_after, "after calibration", TOWARDS, "o"),
    ):
        mean_risk = np.array([_float(b.get("mean_risk")) for b in bins])
        observed = np.array([_float(b.get("observed")) for b in bins])
        keep = np.isfinite(mean_risk) & np.isfinite(observed)
        top.plot(mean_risk[keep], observed[keep], marker=marker, color=colour, label=name)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed outcome rate", title="Reliability diagram")
    top.set_aspect("auto")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    top.grid(alpha=0.3)

    width = 0.5 / max(len(bins_before), len(bins_after), 1)
    for bins, colour, shift in ((bins_before, BEFORE, -0.5), (bins_after, TOWARDS, 0.5)):
        n = len(bins)
        if n == 0:
            continue
        centres = (np.arange(n) + 0.5) / n
        counts = [_float(b.get("count")) for b in bins]
        bottom.bar(centres + shift * width, np.nan_to_num(counts), width=width, color=colour)
    bottom.set(xlabel="predicted risk", ylabel="patients")
    bottom.grid(alpha=0.3, axis="y")
    return _png(fig)


def roc_pr_curves(labels: np.ndarray, risk: np.ndarray) -> bytes:
    """ROC and precision-recall curves side by side.

    Args:
        labels: ``(N,)`` 0/1 outcome.
        risk: ``(N,)`` predicted probability of the outcome.

    Returns:
        PNG bytes. With a single class in ``labels`` the panels say so instead of drawing a curve.
    """
    # Imported here: scikit-learn takes seconds to import and only this figure needs it.
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int).ravel()
    risk = np.asarray(risk, dtype=float).ravel()
    if labels.shape != risk.shape:
        raise ValueError(f"labels {labels.shape} and risk {risk.shape} must have the same length")
    fig = Figure(figsize=(9.0, 4.0))
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1, label="chance")
    both_classes = np.unique(labels).size == 2
    if both_classes:
        fpr, tpr, _ = roc_curve(labels, risk)
        roc_ax.plot(fpr, tpr, color=TOWARDS, label=f"model (AUROC {roc_auc_score(labels, risk):.3f})")
        precision, recall, _ = precision_recall_curve(labels, risk)
        ap = average_precision_score(labels, risk)
        pr_ax.step(recall, precision, where="post", color=TOWARDS, label=f"model (AP {ap:.3f})")
        prevalence = labels.mean()
        pr_ax.axhline(
            prevalence, linestyle="--", color="#999999", linewidth=1, label=f"prevalence {prevalence:.3f}"
        )
    else:
        for ax in (roc_ax, pr_ax):
            ax.text(0.5, 0.5, "needs both outcome classes", ha="center", va="center", transform=ax.transAxes)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity", ylabel="sensitivity", title="ROC curve")
    pr_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    pr_ax.set_title("Precision–recall curve")
    roc_ax.legend(loc="lower right", fontsize=8, frameon=False)
    if both_classes:
        pr_ax.legend(loc="upper right", fontsize=8, frameon=False)
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
    return _png(fig)


def decision_curve(thresholds: np.ndarray, model_nb: np.ndarray, treat_all_nb: np.ndarray) -> bytes:
    """Net benefit of the model against treating everyone and treating no one.

    Args:
        thresholds: ``(K,)`` threshold probabilities.
        model_nb: ``(K,)`` net benefit of acting on the model at each threshold.
        treat_all_nb: ``(K,)`` net benefit of treating everyone.

    Returns:
        PNG bytes. The y axis stops a little below 0, since treat-all plunges at high thresholds.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    model_nb = np.asarray(model_nb, dtype=float)
    treat_all_nb = np.asarray(treat_all_nb, dtype=float)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    ax.plot(thresholds, model_nb, color=TOWARDS, label="model")
    ax.plot(thresholds, treat_all_nb, color=BEFORE, label="treat all")
    ax.axhline(0.0, color="#222222", linewidth=1, label="treat none")
    finite = np.concatenate([model_nb[np.isfinite(model_nb)], treat_all_nb[np.isfinite(treat_all_nb)]])
    top = max(float(finite.max()) if finite.size else 0.0, 0.01) * 1.1
    ax.set_ylim(-0.25 * top, top)
    if thresholds.size:
        ax.set_xlim(float(np.nanmin(thresholds)), float(np.nanmax(thresholds)))
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def missingness_matrix(present: np.ndarray, modalities: Sequence[str]) -> bytes:
    """Which modalities patients have: the most frequent patterns and each modality's availability.

    Args:
        present: ``(N, M)`` bool, True where patient n has modality m.
        modalities: ``M`` modality names.

    Returns:
        PNG bytes: availability per modality on top; below, one row per pattern (at most 20, most
        frequent first) with the number of patients beside it.
    """
    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != len(modalities):
        raise ValueError(
            f"present must be (N, {len(modalities)}) for modalities {list(modalities)}, got {present.shape}"
        )
    counts = Counter(map(tuple, present.tolist()))
    # Ties broken by the pattern itself so that the figure is the same from run to run.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], tuple(not v for v in item[0])))
    shown = ranked[:MAX_PATTERNS]
    hidden = len(ranked) - len(shown)
    m = len(modalities)
    rows = max(len(shown), 1)
    fig = Figure(figsize=(1.6 + 0.55 * m + 1.6, 1.6 + 0.28 * rows))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.2, max(rows * 0.28, 0.6)], width_ratios=[0.55 * m, 1.6])
    avail_ax = fig.add_subplot(grid[0, 0])
    matrix_ax = fig.add_subplot(grid[1, 0])
    count_ax = fig.add_subplot(grid[1, 1], sharey=matrix_ax)

    availability = present.mean(axis=0) if present.shape[0] else np.zeros(m)
    avail_ax.bar(np.arange(m), availability, color=AWAY)
    avail_ax.set(xlim=(-0.5, m - 0.5), ylim=(0, 1), ylabel="available")
    avail_ax.set_xticks([])
    for i, value in enumerate(availability):
        avail_ax.text(i, min(value + 0.04, 0.92), f"{value:.0%}", ha="center", va="bottom", fontsize=7)
    avail_ax.set_title(f"Modality availability ({present.shape[0]} patients)", fontsize=10)

    matrix = np.array([pattern for pattern, _ in shown], dtype=float).reshape(len(shown), m)
    matrix_ax.imshow(matrix, aspect="auto", cmap="Blues", vmin=-0.3, vmax=1.0, interpolation="nearest")
    matrix_ax.set_xticks(np.arange(m), labels=list(modalities), rotation=45, ha="right")
    matrix_ax.set_yticks(
        np.arange(len(shown)), labels=[f"pattern {i + 1}" for i in range(len(shown))], fontsize=7
    )
    matrix_ax.set_xticks(np.arange(m + 1) - 0.5, minor=True)
    matrix_ax.set_yticks(np.arange(len(shown) + 1) - 0.5, minor=True)
    matrix_ax.grid(which="minor", color="white", linewidth=1.5)
    matrix_ax.tick_params(which="minor", length=0)
    if hidden:
        rest = sum(count for _, count in ranked[MAX_PATTERNS:])
        matrix_ax.set_xlabel(f"{hidden} rarer patterns ({rest} patients) not shown", fontsize=8)

    pattern_counts = [count for _, count in shown]
    count_ax.barh(np.arange(len(shown)), pattern_counts, color=BEFORE)
    for i, count in enumerate(pattern_counts):
        count_ax.text(count, i, f" {count}", va="center", fontsize=7)
    count_ax.set_xlabel("patients")
    count_ax.tick_params(labelleft=False)
    count_ax.set_xlim(0, max(pattern_counts, default=1) * 1.3)
    return _png(fig)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float] | np.ndarray,
    *,
    title: str,
    xlabel: str,
    errors: Sequence[float] | np.ndarray | None = None,
) -> bytes:
    """Horizontal bars, first label on top; positive values red (towards the outcome), negative blue.

    Args:
        labels: ``K`` bar names.
        values: ``(K,)`` signed values.
        title: Figure title.
        xlabel: x-axis label.
        errors: Optional ``(K,)`` half-widths drawn as error bars.

    Returns:
        PNG bytes.
    """
    values = np.asarray(values, dtype=float).ravel()
    if len(labels) != values.size:
        raise ValueError(f"{len(labels)} labels for {values.size} values")
    positions = np.arange(values.size)
    fig = Figure(figsize=(6.4, 1.2 + 0.3 * max(values.size, 1)))
    ax = fig.subplots()
    colours = [TOWARDS if v >= 0 else AWAY for v in np.nan_to_num(values)]
    xerr = None if errors is None else np.asarray(errors, dtype=float).ravel()
    ax.barh(positions, np.nan_to_num(values), xerr=xerr, color=colours, ecolor="#333333", capsize=2)
    ax.set_yticks(positions, labels=list(labels))
    ax.invert_yaxis()
    ax.axvline(0.0, color="#222222", linewidth=0.8)
    ax.set(title=title, xlabel=xlabel)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def saliency_overlay(image: np.ndarray, saliency: np.ndarray) -> bytes:
    """The image, and the same image under a semi-transparent heat map of attribution magnitude.

    Args:
        image: ``(H, W)`` grey-level image, any range.
        saliency: ``(h, w)`` signed attribution map at any resolution; it is resized bilinearly to
            ``(H, W)``, and shown as ``|saliency| / max |saliency|``.

    Returns:
        PNG bytes.
    """
    image = np.nan_to_num(np.asarray(image, dtype=float))
    overlay = saliency_rgb(image, saliency)  # the dashboard's picture too
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    height, width = image.shape
    panel = 3.2
    fig = Figure(figsize=(2 * panel + 0.8, panel * height / max(width, 1) + 0.6))
    plain_ax, overlay_ax = fig.subplots(1, 2)
    plain_ax.imshow(
        image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest"
    )
    overlay_ax.imshow(overlay, interpolation="nearest")
    for ax in (plain_ax, overlay_ax):
        ax.set_axis_off()
    plain_ax.set_title("image", fontsize=10)
    overlay_ax.set_title("attribution magnitude", fontsize=10)
    scale = LinearSegmentedColormap.from_list("attribution", ["#ffffff", TOWARDS])
    mappable = overlay_ax.imshow(normalised_magnitude(saliency), cmap=scale, vmin=0, vmax=1, visible=False)
    fig.colorbar(mappable, ax=[plain_ax, overlay_ax], fraction=0.025, pad=0.02)
    return _png(fig)


def _cell_edges(times: np.ndarray) -> np.ndarray:
    if times.size == 1:
        return np.array([times[0] - 0.5, times[0] + 0.5])
    middles = (times[1:] + times[:-1]) / 2
    return np.concatenate(
        [[times[0] - (middles[0] - times[0])], middles, [times[-1] + (times[-1] - middles[-1])]]
    )


def sensor_attribution_plot(
    times: np.ndarray, values: np.ndarray, attribution: np.ndarray, channels: Sequence[str]
) -> bytes:
    """One panel per sensor channel: the observations, over a shading of |attribution| in time.

    Args:
        times: ``(L,)`` increasing time stamps (irregular spacing is fine).
        values: ``(L, C)`` measurements, NaN where a channel was not observed.
        attribution: ``(L, C)`` signed attribution per time step and channel.
        channels: ``C`` channel names.

    Returns:
        PNG bytes with at most 8 panels: the channels with the largest total |attribution|, in channel
        order. The shading shares one scale across panels so that channels compare.
    """
    times = np.asarray(times, dtype=float).ravel()
    values = np.asarray(values, dtype=float)
    attribution = np.abs(np.nan_to_num(np.asarray(attribution, dtype=float)))
    expected = (times.size, len(channels))
    if values.shape != expected or attribution.shape != expected:
        raise ValueError(
            f"values {values.shape} and attribution {attribution.shape} must both be (L, C) = {expected}"
        )
    totals = attribution.sum(axis=0)
    chosen = sorted(np.argsort(-totals, kind="stable")[:MAX_CHANNELS].tolist())
    peak = float(attribution[:, chosen].max()) if chosen and times.size else 0.0
    fig = Figure(figsize=(7.0, 0.4 + 1.3 * max(len(chosen), 1)))
    axes = np.atleast_1d(fig.subplots(max(len(chosen), 1), 1, sharex=True, squeeze=False)[:, 0])
    edges = _cell_edges(times) if times.size else np.array([0.0, 1.0])
    for ax, c in zip(axes, chosen, strict=False):
        observed = np.isfinite(values[:, c])
        if observed.any():
            low, high = float(values[observed, c].min()), float(values[observed, c].max())
            pad = (high - low) * 0.1 or 1.0
            low, high = low - pad, high + pad
        else:
            low, high = 0.0, 1.0
            ax.text(0.5, 0.5, "no observations", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        # vmax above the peak keeps the darkest shade light enough for the points to stay visible.
        ax.pcolormesh(
            edges,
            [low, high],
            attribution[None, :, c],
            cmap="Oranges",
            vmin=0,
            vmax=1.6 * peak or 1.0,
            shading="flat",
        )
        ax.plot(times[observed], values[observed, c], color="#333333", linewidth=0.8)
        ax.plot(times[observed], values[observed, c], "o", color="#111111", markersize=2.5)
        ax.set_ylim(low, high)
        ax.set_ylabel(channels[c], fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time")
    axes[0].set_title("Sensor channels, shaded by |attribution|", fontsize=10)
    return _png(fig)


def spectrogram_attribution(spectrum: np.ndarray, attribution: np.ndarray, seconds_per_frame: float) -> bytes:
    """A log-mel spectrogram above its attribution map, both on a time axis in seconds.

    Args:
        spectrum: ``(n_mels, F)`` log-power.
        attribution: ``(n_mels, F)`` signed attribution (red towards the outcome, blue away).
        seconds_per_frame: Hop between frames, in seconds.

    Returns:
        PNG bytes.
    """
    spectrum = np.asarray(spectrum, dtype=float)
    attribution = np.nan_to_num(np.asarray(attribution, dtype=float))
    if spectrum.ndim != 2 or attribution.shape != spectrum.shape:
        raise ValueError(
            f"spectrum {spectrum.shape} and attribution {attribution.shape} must both be (n_mels, F)"
        )
    n_mels, frames = spectrum.shape
    extent = (0.0, frames * seconds_per_frame, 0, n_mels)
    fig = Figure(figsize=(7.0, 5.0))
    spec_ax, attr_ax = fig.subplots(2, 1, sharex=True)
    image = spec_ax.imshow(spectrum, aspect="auto", origin="lower", extent=extent, cmap="magma")
    fig.colorbar(image, ax=spec_ax, label="log power")
    bound = float(np.abs(attribution).max()) or 1.0
    heat = attr_ax.imshow(
        attribution, aspect="auto", origin="lower", extent=extent, cmap="RdBu_r", vmin=-bound, vmax=bound
    )
    fig.colorbar(heat, ax=attr_ax, label="attribution")
    spec_ax.set(ylabel="mel band", title="Spectrogram")
    attr_ax.set(ylabel="mel band", xlabel="time (s)", title="Attribution")
    return _png(fig)


def waveform_plot(waveform: np.ndarray, sample_rate: float) -> bytes:
    """An audio or signal waveform against time in seconds.

    Args:
        waveform: ``(N,)`` samples.
        sample_rate: Samples per second.

    Returns:
        PNG bytes. Long signals are drawn as a min/max envelope, which looks the same at this size.
    """
    waveform = np.nan_to_num(np.asarray(waveform, dtype=float).ravel())
    fig = Figure(figsize=(7.0, 2.4))
    ax = fig.subplots()
    columns = 2000
    if waveform.size > 2 * columns:
        chunks = np.array_split(waveform, columns)
        starts = np.cumsum([0] + [len(c) for c in chunks[:-1]]) / sample_rate
        ax.fill_between(
            starts,
            [c.min() for c in chunks],
            [c.max() for c in chunks],
            color=AWAY,
            linewidth=0.5,
            step="post",
        )
    else:
        ax.plot(np.arange(waveform.size) / sample_rate, waveform, color=AWAY, linewidth=0.7)
    ax.set(xlabel="time (s)", ylabel="amplitude", title="Waveform")
    ax.set_xlim(0, max(waveform.size, 1) / sample_rate)
    ax.grid(alpha=0.3)
    return _png(fig)


def curves_plot(
    x: np.ndarray, curves: Mapping[str, np.ndarray], *, title: str, xlabel: str, ylabel: str
) -> bytes:
    """Several curves over one x axis, e.g. deletion and insertion curves of a faithfulness check.

    Args:
        x: ``(K,)`` shared x values.
        curves: name -> ``(K,)`` y values.
        title: Figure title.
        xlabel: x-axis label.
        ylabel: y-axis label.

    Returns:
        PNG bytes.
    """
    x = np.asarray(x, dtype=float).ravel()
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for name, y in curves.items():
        y = np.asarray(y, dtype=float).ravel()
        if y.shape != x.shape:
            raise ValueError(f"curve {name!r} has {y.size} points for {x.size} x values")
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)
