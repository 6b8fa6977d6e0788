"""The model audit report on a real tiny bundle: cohort-level modality effects, every section, escaping,
the PDF."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.bundles.loading import load_bundle
from pipelines.cli import app
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.explanations.explaining import reference_base_rate
from pipelines.reports.reporting import modality_effects

pytestmark = pytest.mark.slow

SECTIONS = (
    "intended-use",
    "data",
    "discrimination",
    "calibration",
    "decision",
    "modalities",
    "weights",
    "faithfulness",
    "examples",
    "limitations",
    "tripod-ai",
)


def test_modality_effects_shapley_adds_up_and_ablation_touches_only_present_modalities(
    bundle_path, cohort_60
):
    bundle, cohort = load_bundle(bundle_path), load_cohort(cohort_60)
    effects = modality_effects(bundle, cohort, range(len(cohort.table)), batch_size=7)
    base = reference_base_rate(bundle, 1)
    assert effects.shapley.shape == (len(cohort.table), len(effects.modalities))
    np.testing.assert_allclose(effects.shapley.sum(1), effects.risk - base, atol=1e-5)
    absent = effects.modality_weights == 0.0  # (N, M): what the model did not see
    assert absent.any() and (~absent).any()
    for row, k in zip(*np.nonzero(absent), strict=True):
        assert effects.shapley[row, k] == 0.0
        assert effects.without[effects.modalities[k]][row] == effects.risk[row]


def test_report_has_every_section_escapes_notes_and_renders_a_pdf(bundle_path, cohort_60, tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, folder)
    for note in (folder / "notes").glob("*.txt"):
        note.write_text("Seen <script>alert(1)</script> overnight. " + note.read_text())
    out = tmp_path / "audit" / "report.html"
    result = CliRunner().invoke(
        app,
        ["report", str(bundle_path), str(folder / "cohort.yaml"), "--out", str(out), "--pdf",
         "--split", "all", "--n-boot", "50", "--faithfulness-patients", "3", "--steps", "8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    html = out.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert 'class="highlighted-note"' in html
    shown = re.sub(r"<[^>]+>", "", html)  # the text a reader sees
    assert re.search(r"&lt;\s*script\s*&gt;", shown), "the note's <script> should appear, escaped"
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    ids = load_cohort(folder / "cohort.yaml").table["patient_id"].astype(str)
    assert not any(pid in html for pid in ids), "the report must not name patients"
    for words in (
        "ROC and precision-recall",
        "Reliability diagram",
        "Net benefit",
        "TRIPOD+AI",
        "Deletion and insertion",
        "Example A",
    ):
        assert words in html, words
    pdf = out.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    pages = re.search(r"\((\d+) pages\)", result.output)
    assert pages and int(pages.group(1)) > 1, result.output
