"""The dashboard's pictures and tables: escaped note HTML, overlays of the right size, honest tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from app import charts, frames, pictures
from explain.highlight import highlighted_note_html
from explain.palette import AWAY, TOWARDS, rgb


def test_note_html_escapes_every_word_and_joins_word_pieces():
    words = [("<script>", 0.5), ("alert", -0.2), ("ph", 0.1), ("##ysio", 0.2), (".", 0.0), ('"x"', 0.0)]
    text = pictures.note_html(words)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&quot;x&quot;" in text
    assert ">physio</span>" in text  # one word, its pieces' scores summed
    assert 'title="+0.3"' in text
    assert text.count('class="note-word"') == 5
    assert "rgba(192, 57, 43, 0.850)" in text  # the strongest word, red: it raises the risk
    assert "rgba(46, 111, 186" in text  # a word that lowers the risk is blue
    shared = highlighted_note_html([w for w, _ in words], [s for _, s in words])
    assert text == f'<div class="deepwe-note" style="line-height: 1.9">{shared}</div>'


def test_the_dashboard_and_the_report_share_one_palette():
    assert charts.RED == TOWARDS and charts.BLUE == AWAY
    assert tuple(pictures.RED) == rgb(TOWARDS) and tuple(pictures.BLUE) == rgb(AWAY)


def test_saliency_overlay_is_enlarged_rgb_and_red_where_attribution_is():
    image = np.zeros((1, 33, 31))
    attribution = np.zeros((1, 33, 31))
    attribution[0, 5, 7] = 2.0
    overlay = pictures.saliency_overlay(image, attribution)
    assert overlay.dtype == np.uint8 and overlay.shape == (33 * 9, 31 * 9, 3)
    assert tuple(overlay[5 * 9, 7 * 9]) == (125, 37, 28)  # 65 % of the report's red over black
    assert overlay[0, 0].tolist() == [0, 0, 0]
    volume = pictures.saliency_overlay(np.zeros((1, 5, 33, 31)), np.zeros((1, 5, 33, 31)))
    assert volume.shape == overlay.shape
    with pytest.raises(ValueError, match="differ in shape"):
        pictures.saliency_overlay(image, attribution[:, :10])


def test_block_reduce_averages_observations_and_adds_attributions():
    values = np.array([1.0, np.nan, 3.0, np.nan, np.nan, 6.0, 7.0])
    means, block = pictures.block_reduce(values, max_points=3)
    assert block == 3
    np.testing.assert_allclose(means, [2.0, 6.0, 7.0])
    sums, _ = pictures.block_reduce(np.arange(7.0), max_points=3, how="sum")
    np.testing.assert_allclose(sums, [3.0, 12.0, 6.0])
    gap, _ = pictures.block_reduce(np.array([np.nan, np.nan, 1.0]), max_points=2)
    assert np.isnan(gap[0])  # nothing observed stays a gap, not a zero


def test_cohort_table_names_missing_and_failed_modalities():
    def row(n, present, errors, status="ok"):
        return {
            "row": n,
            "patient_id": f"P{n}",
            "status": status,
            "risk": 0.5 if status == "ok" else None,
            "label": "1",
            "ood": False,
            "error": None if status == "ok" else "no usable modality",
            "modality_errors": json.dumps(errors),
            **{f"present_{m}": flag for m, flag in present.items()},
        }

    frame = pd.DataFrame(
        [
            row(2, {"labs": True, "cxr": False}, {"cxr": "unreadable DICOM"}),
            row(1, {"labs": True, "cxr": False}, {}),
            row(3, {"labs": None, "cxr": None}, {}, status="error"),
        ]
    )
    table = frames.cohort_table(frame, ["labs", "cxr"])
    assert table["patient_id"].tolist() == ["P1", "P2", "P3"]
    assert table["missing"].tolist() == ["cxr", frames.NONE_MISSING, "labs, cxr"]
    assert table["failed_to_load"].tolist() == [frames.NONE_MISSING, "cxr", frames.NONE_MISSING]
    available = frames.availability(frame, ["labs", "cxr"]).set_index("modality")
    assert available.loc["labs", "present"] == 2 and available.loc["cxr", "failed_to_load"] == 1
