"""The model audit report as one self-contained HTML file, and as a PDF.

A :class:`Report` is a list of :class:`Section` objects, each a list of blocks: plain text (escaped),
:class:`Figure` (PNG bytes, inlined as a data URI), :class:`Table`, or :class:`RawHtml` for trusted
fragments built by :mod:`explain.figures`. The HTML has inline CSS, no script and no external URL, so it
opens the same on an air-gapped ward PC as in a browser with network access. It ends with a table that
maps the TRIPOD+AI checklist items to the sections that report them.

TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting
clinical prediction models that use regression or machine learning methods. BMJ 2024;385:e078378
(doi:10.1136/bmj-2023-078378). Item numbers follow the checklist of that paper; the short titles are ours.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import weasyprint
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from explain.figures import png_data_uri

TRIPOD_AI_ITEMS: dict[str, str] = {
    "1": "Title",
    "2": "Abstract",
    "3a": "Background: healthcare context and rationale",
    "3b": "Background: target population, intended purpose and users",
    "3c": "Background: known health inequalities",
    "4": "Objectives",
    "5a": "Data: sources and representativeness",
    "5b": "Data: dates of collection",
    "6a": "Participants: study setting",
    "6b": "Participants: eligibility criteria",
    "6c": "Participants: treatments received",
    "7": "Data preparation and quality checking",
    "8a": "Outcome: definition, time horizon and assessment",
    "8b": "Outcome: qualifications of assessors",
    "8c": "Outcome: blinding of assessment",
    "9a": "Predictors: choice of initial predictors",
    "9b": "Predictors: definition and measurement",
    "9c": "Predictors: qualifications of assessors",
    "10": "Sample size",
    "11": "Missing data",
    "12a": "Analytical methods: use and partitioning of the data",
    "12b": "Analytical methods: handling of predictors",
    "12c": "Analytical methods: model type, building steps, tuning, internal validation",
    "12d": "Analytical methods: heterogeneity across clusters",
    "12e": "Analytical methods: performance measures and plots",
    "12f": "Analytical methods: model updating (recalibration)",
    "12g": "Analytical methods: how predictions were calculated",
    "13": "Class imbalance",
    "14": "Fairness",
    "15": "Model output and thresholds",
    "16": "Training versus evaluation data",
    "17": "Ethical approval",
    "18a": "Open science: funding",
    "18b": "Open science: conflicts of interest",
    "18c": "Open science: protocol",
    "18d": "Open science: registration",
    "18e": "Open science: data sharing",
    "18f": "Open science: code sharing",
    "19": "Patient and public involvement",
    "20a": "Participants: flow, with and without the outcome",
    "20b": "Participants: characteristics and missing data",
    "20c": "Participants: evaluation data compared with development data",
    "21": "Model development: participants and events per analysis",
    "22": "Model specification",
    "23a": "Model performance, with confidence intervals and subgroups",
    "23b": "Model performance: heterogeneity across clusters",
    "24": "Model updating results",
    "25": "Interpretation",
    "26": "Limitations",
    "27a": "Usability: handling poor-quality or unavailable input data",
    "27b": "Usability: user interaction and expertise required",
    "27c": "Usability: next steps and generalisability",
}

TRIPOD_SECTION_ID = "tripod-ai"
MISSING = "–"
_SECTION_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class Figure:
    """A PNG figure with its title and caption (both plain text)."""

    title: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A table; cells may be text or numbers (numbers are formatted by :func:`format_value`)."""

    columns: list[str]
    rows: list[list[object]]
    caption: str = ""


@dataclass(frozen=True)
class RawHtml:
    """A trusted HTML fragment, inserted as is: only for fragments our own code builds and escapes."""

    html: str


Block = str | Figure | Table | RawHtml


@dataclass(frozen=True)
class Section:
    """One section: an anchor id, a title, its blocks, and the TRIPOD+AI items it reports.

    A ``str`` block is plain text: it is escaped, and blank lines separate paragraphs.
    """

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    tripod: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """The whole report."""

    title: str
    subtitle: str
    sections: list[Section]
    generated_at: datetime | str
    code_version: str


def format_value(value: object) -> str:
    """A table cell as text: 3 significant digits for floats, ``–`` for None and NaN.

    Args:
        value: Any cell value (numpy scalars included).

    Returns:
        Unescaped text.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return MISSING
        if math.isinf(number):
            return "∞" if number > 0 else "−∞"
        if number == 0:
            return "0"
        if abs(number) >= 1000:
            return f"{number:.0f}"
        if abs(number) < 1e-3:
            return f"{number:.2e}"
        return f"{number:.3g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _text(value: object) -> str:
    return html.escape(format_value(value), quote=True)


def _paragraphs(text: str) -> str:
    parts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    return "".join(f"<p>{html.escape(part)}</p>" for part in parts)


class _Counter:
    def __init__(self) -> None:
        self.figures = 0
        self.tables = 0


def _figure(figure: Figure, counter: _Counter) -> str:
    counter.figures += 1
    caption = f"<strong>Figure {counter.figures}.</strong> {html.escape(figure.title)}"
    if figure.caption:
        caption += f" — {html.escape(figure.caption)}"
    return (
        f'<figure><img src="{png_data_uri(figure.png)}" alt="{html.escape(figure.title, quote=True)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _table(table: Table, counter: _Counter, where: str) -> str:
    for i, row in enumerate(table.rows):
        if len(row) != len(table.columns):
            raise ValueError(f"{where}: table row {i} has {len(row)} cells for {len(table.columns)} columns")
    counter.tables += 1
    head = "".join(f"<th>{html.escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_text(cell)}</td>'
            if isinstance(cell, numbers.Number) and not isinstance(cell, bool)
            else f"<td>{_text(cell)}</td>"
            for cell in row
        )
        + "</tr>"
        for row in table.rows
    )
    caption = (
        f"<strong>Table {counter.tables}.</strong> {html.escape(table.caption)}" if table.caption else ""
    )
    caption_html = f"<caption>{caption}</caption>" if caption else ""
    return f"<table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _block(block: Block, counter: _Counter, where: str) -> str:
    if isinstance(block, str):
        return _paragraphs(block)
    if isinstance(block, Figure):
        return _figure(block, counter)
    if isinstance(block, Table):
        return _table(block, counter, where)
    if isinstance(block, RawHtml):
        return block.html
    raise TypeError(f"{where}: a block must be str, Figure, Table or RawHtml, got {type(block).__name__}")


def _check(sections: Sequence[Section]) -> None:
    seen: set[str] = set()
    for section in sections:
        if not _SECTION_ID.match(section.id) or section.id == TRIPOD_SECTION_ID:
            raise ValueError(
                f"section id {section.id!r} must be a letter then letters, digits, '-' or '_', "
                f"and not the reserved {TRIPOD_SECTION_ID!r}"
            )
        if section.id in seen:
            raise ValueError(f"section id {section.id!r} is used twice")
        seen.add(section.id)
        unknown = [item for item in section.tripod if item not in TRIPOD_AI_ITEMS]
        if unknown:
            raise ValueError(
                f"section {section.id!r} names unknown TRIPOD+AI items {unknown}; known: {', '.join(TRIPOD_AI_ITEMS)}"
            )


def _tripod_table(sections: Sequence[Section]) -> str:
    covered: dict[str, list[Section]] = {item: [] for item in TRIPOD_AI_ITEMS}
    for section in sections:
        for item in dict.fromkeys(section.tripod):
            covered[item].append(section)
    rows = []
    for item, title in TRIPOD_AI_ITEMS.items():
        links = ", ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in covered[item])
        row_class = "" if links else ' class="uncovered"'
        rows.append(
            f"<tr{row_class}><td>{html.escape(item)}</td><td>{html.escape(title)}</td>"
            f"<td>{links or 'not reported here'}</td></tr>"
        )
    n_covered = sum(bool(v) for v in covered.values())
    return (
        f'<section id="{TRIPOD_SECTION_ID}"><h2>TRIPOD+AI</h2>'
        f"<p>{n_covered} of {len(TRIPOD_AI_ITEMS)} TRIPOD+AI checklist items are reported in this document. "
        "Items about the study rather than the model (ethics, funding, registration, public involvement) "
        "belong to the accompanying publication. Checklist: Collins GS, Moons KGM, Dhiman P, et al. "
        "BMJ 2024;385:e078378.</p>"
        "<table><thead><tr><th>Item</th><th>Topic</th><th>Section</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


_CSS = """
@page { size: A4; margin: 16mm 15mm 18mm 15mm;
        @bottom-center { content: counter(page) " / " counter(pages); font-size: 8pt; color: #666; } }
html { font-family: "DejaVu Sans", "Liberation Sans", sans-serif; font-size: 10pt; line-height: 1.4;
       color: #1b1b1b; }
body { max-width: 60rem; margin: 0 auto; padding: 1rem; }
header { border-bottom: 2px solid #2e6fba; margin-bottom: 1rem; }
h1 { font-size: 18pt; margin: 0 0 0.2rem 0; }
h2 { font-size: 13pt; border-bottom: 1px solid #ccc; margin-top: 1.6rem; break-after: avoid; }
.subtitle { font-size: 11pt; color: #444; margin: 0 0 0.4rem 0; }
.meta { font-size: 8.5pt; color: #666; }
nav.toc ol { padding-left: 1.4rem; }
nav.toc a { color: #1b1b1b; text-decoration: none; }
nav.toc a::after { content: leader('.') target-counter(attr(href), page); }
section { margin-bottom: 1rem; }
figure { margin: 0.8rem 0; break-inside: avoid; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 8.5pt; color: #333; margin-top: 0.3rem; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; margin: 0.6rem 0; }
caption { caption-side: top; text-align: left; font-size: 8.5pt; margin-bottom: 0.2rem; }
th, td { border: 1px solid #ccc; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.uncovered td { color: #888; }
.highlighted-note { line-height: 1.9; }
.note-word { padding: 1px 2px; border-radius: 2px; }
@media screen { nav.toc a::after { content: none; } }
"""


def render_html(report: Report) -> str:
    """The report as one HTML document: inline CSS, images as data URIs, no script, no external URL.

    Args:
        report: The report; every string in it is treated as plain text except :class:`RawHtml`.

    Returns:
        The HTML text.

    Raises:
        ValueError: A section id is malformed or repeated, a TRIPOD+AI item is unknown, or a table row
            has the wrong number of cells.
    """
    _check(report.sections)
    counter = _Counter()
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in report.sections)
    toc += f'<li><a href="#{TRIPOD_SECTION_ID}">TRIPOD+AI checklist</a></li>'
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>'
        + "".join(_block(block, counter, f"section {s.id!r}") for block in s.blocks)
        + "</section>"
        for s in report.sections
    )
    subtitle = f'<p class="subtitle">{html.escape(report.subtitle)}</p>' if report.subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(report.title)}</h1>{subtitle}"
        f'<p class="meta">Generated {_text(report.generated_at)} · code version {html.escape(report.code_version)}</p>'
        "</header>"
        f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>'
        f"{body}{_tripod_table(report.sections)}</body></html>\n"
    )


class _DataOnlyFetcher(URLFetcher):
    """Reads ``data:`` URIs (our inlined figures) and refuses every other URL, network or file."""

    def __init__(self) -> None:
        super().__init__(fail_on_errors=True)

    def fetch(self, url, headers=None):  # type: ignore[no-untyped-def]
        if url.startswith("data:"):
            return super().fetch(url, headers)
        raise ValueError(f"refusing to fetch {url!r}: the report must be self-contained")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain exclusive open (not mkstemp, which forces mode 0600) so the file gets the user's umask.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_html(report: Report, path: str | os.PathLike[str]) -> Path:
    """Render the report and write it atomically (a temporary file beside ``path``, then a rename).

    Returns:
        The path written.
    """
    target = Path(path)
    _atomic_write(target, render_html(report).encode("utf-8"))
    return target


def write_pdf(html: str, path: str | os.PathLike[str]) -> int:
    """Print report HTML to an A4 PDF with WeasyPrint, atomically, fetching nothing from outside.

    Args:
        html: HTML from :func:`render_html` (or any self-contained HTML).
        path: Where the PDF goes.

    Returns:
        The number of pages.

    Raises:
        ValueError: The HTML refers to a resource other than a ``data:`` URI.
    """
    try:
        document = weasyprint.HTML(string=html, base_url=None, url_fetcher=_DataOnlyFetcher()).render()
        pdf = document.write_pdf()
    except FatalURLFetchingError as error:
        raise ValueError(f"cannot write {path}: {error.__cause__ or error}") from None
    _atomic_write(Path(path), pdf)
    return len(document.pages)
