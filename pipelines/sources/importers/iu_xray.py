"""Indiana University chest X-ray reports (Open-i): one note per report, normal vs abnormal.

``indiana_reports.csv`` holds ``uid, MeSH, Problems, image, indication, comparison, findings,
impression``. The outcome comes from ``Problems`` (the coded findings), so the coded columns are
carried in the table for reference but kept out of every modality.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pipelines.sources.importers._common import ImportResult, read_csv_rows, require_file, write_cohort

REPORTS = "indiana_reports.csv"
REQUIRED = ("uid", "Problems", "findings", "impression")
EXPECTED = f"the IU X-ray {REPORTS} (uid, MeSH, Problems, findings, impression, ...)"
_SAFE_UID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def import_iu_xray(src: str | Path, out: str | Path) -> ImportResult:
    """Write ``out/notes/<uid>.txt`` (findings, then impression) per report and a cohort of them.

    Args:
        src: ``indiana_reports.csv`` or the folder holding it.
        out: the output folder (created).

    Table columns: ``uid``, ``abnormal`` (the outcome: 0 when ``Problems`` is ``normal``, else 1),
    ``note_path``, and ``Problems`` and ``MeSH`` as given (in no modality: the outcome is read
    from them).

    Raises:
        ValueError: ``src`` is not the reports table or lacks one of its columns.
    """
    src = Path(src)
    table = require_file(src / REPORTS if src.is_dir() else src, EXPECTED)
    reports = read_csv_rows(table, REQUIRED, EXPECTED)
    out = Path(out)
    (out / "notes").mkdir(parents=True, exist_ok=True)
    rows, seen, skipped = [], set(), Counter()
    for report in reports:
        uid = report["uid"]
        if not _SAFE_UID.fullmatch(uid):
            skipped["uid blank or not usable as a file name"] += 1
            continue
        if uid in seen:
            skipped["repeated uid"] += 1
            continue
        seen.add(uid)
        note = _note(report["findings"], report["impression"])
        if not note:
            skipped["report with neither findings nor impression"] += 1
            continue
        path = f"notes/{uid}.txt"
        (out / path).write_text(note, encoding="utf-8")
        problems = report["Problems"]
        rows.append(
            {
                "uid": uid,
                "abnormal": "" if not problems else "0" if problems.lower() == "normal" else "1",
                "note_path": path,
                "Problems": problems,
                "MeSH": report.get("MeSH", ""),
            }
        )
    spec = {
        "name": "iu-xray",
        "description": (
            "Indiana University chest X-ray reports (Open-i), findings and impression; abnormal = "
            "any coded problem. CC BY-NC-ND 4.0, Demner-Fushman et al., JAMIA 2016."
        ),
        "id": "uid",
        "outcome": {"column": "abnormal", "task": "binary", "positive": 1},
        "modalities": {"report": {"kind": "text", "column": "note_path"}},
    }
    columns = ["uid", "abnormal", "note_path", "Problems", "MeSH"]
    return write_cohort(out, spec, columns, rows, skipped=skipped)


def _note(findings: str, impression: str) -> str:
    """The note text, or ``""`` when the report has neither section."""
    sections = [
        f"{title}: {text}" for title, text in (("Findings", findings), ("Impression", impression)) if text
    ]
    return "\n\n".join(sections) + "\n" if sections else ""
