"""The audit report: escaped, self-contained HTML with a TOC and TRIPOD+AI map, and a real PDF."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from explain import figures, highlight
from explain.report_html import (
    TRIPOD_AI_ITEMS,
    Figure,
    RawHtml,
    Report,
    Section,
    Table,
    format_value,
    render_html,
    write_html,
    write_pdf,
)


@pytest.fixture(scope="module")
def small_png() -> bytes:
    return figures.bar_chart(["a", "b"], [0.2, -0.1], title="t", xlabel="x")


def _report(png: bytes) -> Report:
    return Report(
        title="Audit <of> model",
        subtitle="icu-mortality & friends",
        sections=[
            Section(
                id="data",
                title="Data",
                blocks=["First paragraph <script>alert(1)</script>\n\nSecond paragraph."],
                tripod=["5a", "11"],
            ),
            Section(
                id="performance",
                title="Performance",
                blocks=[
                    Figure("Attribution", png, "caption <b>"),
                    Table(
                        ["metric", "value", "n"],
                        [["AUROC", 0.81234, 53], ["ECE", float("nan"), None]],
                        "Metrics",
                    ),
                    RawHtml(highlight.highlighted_note_html(["high", "lact", "##ate"], [0.3, -0.1, 0.4])),
                ],
                tripod=["23a", "12e", "11"],
            ),
        ],
        generated_at=datetime(2025, 1, 2, 3, 4, 5),
        code_version="0.1.0+abc",
    )


def test_render_html_escapes_text_and_is_self_contained(small_png: bytes) -> None:
    page = render_html(_report(small_png))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "Audit &lt;of&gt; model" in page and "caption &lt;b&gt;" in page
    for external in ("http://", "https://", 'src="http', "<link", "@import", "url("):
        assert external not in page
    assert page.count('<img src="data:image/png;base64,') == 1
    assert page.count("<p>") >= 2  # the blank line split the text into paragraphs
    assert "0.812" in page and "0.81234" not in page
    assert '<td class="num">–</td>' in page and "<td>–</td>" in page  # NaN and None
    assert "2025-01-02T03:04:05" in page and "0.1.0+abc" in page


def test_toc_lists_every_section_and_tripod_maps_items(small_png: bytes) -> None:
    page = render_html(_report(small_png))
    nav = page.split('<nav class="toc">', 1)[1].split("</nav>", 1)[0]
    for section_id in ("data", "performance", "tripod-ai"):
        assert f'href="#{section_id}"' in nav
        assert f'id="{section_id}"' in page
    tripod = page.split('<section id="tripod-ai">', 1)[1]
    row_11 = tripod.split("<td>11</td>", 1)[1].split("</tr>", 1)[0]
    assert '<a href="#data">Data</a>' in row_11 and '<a href="#performance">Performance</a>' in row_11
    assert "not reported here" in tripod.split("<td>17</td>", 1)[1].split("</tr>", 1)[0]
    assert "4 of 52" in tripod


def test_tripod_items_follow_the_checklist_numbering() -> None:
    assert len(TRIPOD_AI_ITEMS) == 52
    for item in ("1", "3c", "12e", "12f", "12g", "13", "14", "18f", "23a", "24", "25", "27c"):
        assert item in TRIPOD_AI_ITEMS
    assert TRIPOD_AI_ITEMS["14"] == "Fairness" and TRIPOD_AI_ITEMS["11"] == "Missing data"


def test_bad_sections_are_refused(small_png: bytes) -> None:
    base = _report(small_png)
    with pytest.raises(ValueError, match="unknown TRIPOD"):
        render_html(Report("t", "", [Section("a", "A", [], ["99z"])], "now", "v"))
    with pytest.raises(ValueError, match="used twice"):
        render_html(Report("t", "", [base.sections[0], base.sections[0]], "now", "v"))
    with pytest.raises(ValueError, match="section id"):
        render_html(Report("t", "", [Section('x" onload="y', "A")], "now", "v"))
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        render_html(Report("t", "", [Section("a", "A", [Table(["x", "y"], [[1]])])], "now", "v"))


def test_format_value() -> None:
    assert format_value(0.123456) == "0.123"
    assert format_value(np.float32(12.3456)) == "12.3"
    assert format_value(None) == format_value(math.nan) == "–"
    assert format_value(np.int64(42)) == "42"
    assert format_value(123456.7) == "123457"
    assert format_value(True) == "yes"


def test_write_html_and_pdf(tmp_path, small_png: bytes) -> None:
    report = _report(small_png)
    html_path = write_html(report, tmp_path / "out" / "report.html")
    assert html_path.read_text(encoding="utf-8") == render_html(report)
    assert [p.name for p in html_path.parent.iterdir()] == ["report.html"]  # no temporary left behind
    pdf_path = tmp_path / "report.pdf"
    pages = write_pdf(render_html(report), pdf_path)
    assert pages >= 1
    pdf = pdf_path.read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"/Subtype /Image" in pdf  # the data-URI figure got past the fetcher that refuses URLs


def test_write_pdf_refuses_external_resources(tmp_path) -> None:
    page = '<html><body><p>x</p><img src="file:///etc/hostname"></body></html>'
    with pytest.raises(ValueError, match="self-contained"):
        write_pdf(page, tmp_path / "bad.pdf")
    assert not (tmp_path / "bad.pdf").exists()
