"""Figures render to real PNGs of sensible size; saliency resizing and note highlighting are exact."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from explain import figures, highlight

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 5_000  # an empty canvas compresses to far less
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
    assert 200 <= width <= 2500 and 150 <= height <= 2500, (width, height)
    return width, height


def _bins(shift: float) -> list[dict[str, float]]:
    bins = [
        {"mean_risk": (i + 0.5) / 10, "observed": min(1.0, (i + 0.5) / 10 + shift), "count": 10 + i}
        for i in range(10)
    ]
    bins[9] = {"mean_risk": float("nan"), "observed": None, "count": 0}  # an empty bin
    return bins


def test_reliability_diagram_png() -> None:
    _check_png(figures.reliability_diagram(_bins(0.1), _bins(0.0)))


def test_roc_pr_curves_png_and_single_class() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 53)
    risk = np.clip(labels * 0.3 + rng.random(53) * 0.7, 0, 1)
    _check_png(figures.roc_pr_curves(labels, risk))
    _check_png(figures.roc_pr_curves(np.zeros(7, dtype=int), risk[:7]))
    with pytest.raises(ValueError, match="same length"):
        figures.roc_pr_curves(labels, risk[:5])


def test_decision_curve_png() -> None:
    thresholds = np.linspace(0.01, 0.99, 37)
    prevalence = 0.3
    treat_all = prevalence - (1 - prevalence) * thresholds / (1 - thresholds)
    _check_png(figures.decision_curve(thresholds, np.maximum(treat_all, 0) + 0.02, treat_all))


def test_missingness_matrix_png_with_many_patterns() -> None:
    rng = np.random.default_rng(1)
    present = rng.random((97, 6)) < 0.6  # up to 64 patterns, so the top-20 cut applies
    _check_png(figures.missingness_matrix(present, ["labs", "notes", "cxr", "pcg", "vitals", "ecg"]))
    with pytest.raises(ValueError, match="present must be"):
        figures.missingness_matrix(present, ["labs"])


def test_bar_chart_png() -> None:
    png = figures.bar_chart(
        ["age", "lactate", "creatinine"],
        [0.3, -0.2, 0.05],
        title="Attribution",
        xlabel="Δ risk",
        errors=[0.1] * 3,
    )
    _check_png(png)


def test_resize_bilinear_matches_the_image_resolution() -> None:
    small = np.array([[0.0, 1.0], [2.0, 3.0]])
    big = highlight.resize_bilinear(small, (5, 7))
    assert big.shape == (5, 7)
    # pixel-centre alignment keeps the corners and stays within the source range
    assert big[0, 0] == 0.0 and big[-1, -1] == 3.0
    assert big.min() >= 0.0 and big.max() <= 3.0
    np.testing.assert_allclose(highlight.resize_bilinear(np.full((3, 4), 2.5), (11, 13)), 2.5)
    # doubling a ramp: source centres at 0.5 and 1.5 of the output grid interpolate halfway
    np.testing.assert_allclose(
        highlight.resize_bilinear(np.array([[0.0, 4.0]]), (1, 4))[0], [0.0, 1.0, 3.0, 4.0]
    )


def test_saliency_overlay_png() -> None:
    rng = np.random.default_rng(2)
    image = rng.random((61, 47))
    saliency = rng.normal(size=(7, 5))
    width, height = _check_png(figures.saliency_overlay(image, saliency))
    assert width > height  # two panels side by side


def test_sensor_attribution_plot_keeps_eight_channels() -> None:
    rng = np.random.default_rng(3)
    times = np.sort(rng.random(23) * 48)
    values = rng.normal(size=(23, 11))
    values[rng.random((23, 11)) < 0.5] = np.nan
    values[:, 4] = np.nan  # a channel never observed
    attribution = rng.normal(size=(23, 11))
    channels = [f"ch{i}" for i in range(11)]
    eight = _check_png(figures.sensor_attribution_plot(times, values, attribution, channels))
    three = _check_png(
        figures.sensor_attribution_plot(times, values[:, :3], attribution[:, :3], channels[:3])
    )
    nine = _check_png(figures.sensor_attribution_plot(times, values[:, :9], attribution[:, :9], channels[:9]))
    assert eight[1] > three[1]  # more panels, taller figure
    assert eight[1] == nine[1]  # but never more than 8 panels


def test_spectrogram_waveform_and_curves_png() -> None:
    rng = np.random.default_rng(4)
    _check_png(figures.spectrogram_attribution(rng.normal(size=(13, 29)), rng.normal(size=(13, 29)), 0.016))
    _check_png(figures.waveform_plot(np.sin(np.arange(12_001) / 9.0), 4000))  # long: envelope
    _check_png(figures.waveform_plot(np.sin(np.arange(301) / 9.0), 4000))  # short: line
    x = np.linspace(0, 1, 11)
    _check_png(figures.curves_plot(x, {"deletion": 1 - x, "insertion": x}, title="t", xlabel="x", ylabel="y"))


def test_png_data_uri_round_trip() -> None:
    import base64

    uri = figures.png_data_uri(PNG_SIGNATURE + b"rest")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == PNG_SIGNATURE + b"rest"


def test_highlighted_note_escapes_and_merges_wordpieces() -> None:
    tokens = ["[CLS]", "<script>", "lact", "##ate", "##mia", "high", ".", "[SEP]"]
    scores = [9.0, 0.1, 0.5, 0.25, 0.25, -2.0, 0.0, 9.0]
    fragment = highlight.highlighted_note_html(tokens, scores)
    assert "<script" not in fragment
    assert "&lt;script&gt;" in fragment
    words = re.findall(r'title="([^"]+)">([^<]*)</span>', fragment)
    assert [w for _, w in words] == ["&lt;script&gt;", "lactatemia", "high", "."]
    assert float(words[1][0]) == pytest.approx(1.0)  # 0.5 + 0.25 + 0.25
    # red towards the outcome, blue away; the largest |score| is fully (capped) opaque
    assert "rgba(192, 57, 43" in fragment and "rgba(46, 111, 186, 0.850)" in fragment
    assert "high</span><span" in fragment  # punctuation sticks to the word before it
    assert highlight.merge_wordpieces(["##x", "y"], [1.0, float("nan")]) == [("x", 1.0), ("y", 0.0)]
    with pytest.raises(ValueError, match="tokens for"):
        highlight.highlighted_note_html(["a"], [])
