"""The model audit report on a real tiny bundle: every section, escaping, the PDF."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cohorts.cohort_table import load_cohort

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
