"""PhysioNet/CinC Challenge 2017: single-lead ECG records and their rhythm class.

Layout of ``SRC``: WFDB records (``A00001.hea`` + ``A00001.mat``) and ``REFERENCE.csv`` without a
header (``record,label``; labels ``N`` normal, ``A`` atrial fibrillation, ``O`` other rhythm, ``~``
noisy). The records stay where they are: the spec's ``data_root`` is ``SRC``.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

from pipelines.cohorts.spec_io import did_you_mean
from pipelines.sources.importers._common import ImportResult, require_file, require_folder, write_cohort

CLASSES = ("N", "A", "O", "~")
TASKS = ("af", "four")
LAYOUT = "a CinC 2017 folder: WFDB records (.hea + .mat) and REFERENCE.csv (record,label)"
_RATE = re.compile(r"\d+(\.\d*)?")


def import_cinc2017(
    src: str | Path,
    out: str | Path,
    *,
    task: str = "af",
    sample_rate: float = 300.0,
    duration_s: float | None = None,
) -> ImportResult:
    """Write a cohort of one row per labelled record found on disk.

    Args:
        src: the folder of records and ``REFERENCE.csv``.
        out: the output folder (created).
        task: ``"af"`` for a binary outcome ``af`` (1 = ``A``, 0 = any other label), or ``"four"``
            for the multiclass outcome ``rhythm`` with classes ``N, A, O, ~``.
        sample_rate: the grid rate (Hz) of the ``ecg`` sensor modality; the records are at 300 Hz.
        duration_s: crop or pad every record to this many seconds (records are 9 to 61 s); the
            encoder's default when None.

    Table columns: ``record``, ``rhythm`` (the label as given), ``af`` (task ``af`` only) and
    ``ecg_path`` (the ``.hea`` header). The channel names come from the headers' signal
    descriptions.

    Raises:
        ValueError: an unknown task, ``src`` not laid out as CinC 2017, a malformed REFERENCE.csv,
            or none of its records on disk.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}{did_you_mean(task, TASKS)}")
    src = require_folder(Path(src), LAYOUT)
    reference = _read_reference(require_file(src / "REFERENCE.csv", LAYOUT))
    skipped = Counter()
    rows, channels, rates = [], {}, Counter()
    for record, label in reference.items():
        header = src / f"{record}.hea"
        if not header.is_file():
            skipped["record in REFERENCE.csv absent on disk"] += 1
            continue
        parsed = _read_header(header)
        if parsed is None:
            skipped["unreadable WFDB header"] += 1
            continue
        names, rate, signal_files = parsed
        if not all((src / name).is_file() for name in signal_files):
            skipped["signal file named by the header is missing"] += 1
            continue
        channels.update(dict.fromkeys(names))
        rates[rate] += 1
        row = {"record": record, "rhythm": label, "ecg_path": header.name}
        if task == "af":
            row["af"] = "1" if label == "A" else "0"
        rows.append(row)
    on_disk = {p.stem for p in src.glob("*.hea")}
    skipped["record on disk without a label in REFERENCE.csv"] = len(on_disk - reference.keys())
    if not rows:
        raise ValueError(
            f"{src}: expected WFDB records named in REFERENCE.csv, but none of its "
            f"{len(reference)} records has a readable header and signal file here"
        )
    if not channels:
        raise ValueError(f"{src}: expected signal names in the WFDB headers, found none")
    other = sorted(r for r in rates if r != sample_rate)
    notes = [f"{sum(rates[r] for r in other)} records are sampled at {other} Hz"] if other else []
    columns = ["record", "rhythm", *(["af"] if task == "af" else []), "ecg_path"]
    spec = _spec(src, task, list(channels), sample_rate, duration_s)
    return write_cohort(Path(out), spec, columns, rows, skipped=skipped, notes=notes)


def _spec(
    src: Path, task: str, channels: list[str], sample_rate: float, duration_s: float | None
) -> dict[str, object]:
    if task == "af":
        outcome = {"column": "af", "task": "binary", "positive": 1}
    else:
        outcome = {"column": "rhythm", "task": "multiclass", "classes": list(CLASSES)}
    ecg = {"kind": "sensor", "column": "ecg_path", "channels": channels, "sample_rate": sample_rate}
    if duration_s is not None:
        ecg["duration_s"] = duration_s
    return {
        "name": f"cinc2017-{task}",
        "description": (
            "PhysioNet/CinC Challenge 2017 single-lead ECG (AliveCor, 300 Hz); rhythm N normal, "
            "A atrial fibrillation, O other, ~ noisy. ODC-By 1.0, Clifford et al., CinC 2017."
        ),
        "data_root": str(src),
        "id": "record",
        "outcome": outcome,
        "modalities": {"ecg": ecg},
    }


def _read_reference(path: Path) -> dict[str, str]:
    """Record name -> label, in file order.

    Raises:
        ValueError: a line that is not ``record,label`` with a known label, or a repeated record.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: expected UTF-8 text lines 'record,label'") from None
    reference: dict[str, str] = {}
    for number, fields in enumerate(lines, start=1):
        fields = [field.strip() for field in fields]
        if not any(fields):
            continue
        if len(fields) != 2 or not re.fullmatch(r"[A-Za-z0-9_-]+", fields[0]):
            raise ValueError(f"{path}, line {number}: expected 'record,label' (no header line)")
        if fields[1] not in CLASSES:
            raise ValueError(f"{path}, line {number}: expected a label in {', '.join(CLASSES)}")
        if fields[0] in reference:
            raise ValueError(f"{path}, line {number}: expected each record once, found a repeat")
        reference[fields[0]] = fields[1]
    if not reference:
        raise ValueError(f"{path}: expected lines 'record,label', but the file has none")
    return reference


def _read_header(path: Path) -> tuple[list[str], float, set[str]] | None:
    """Signal names, sampling frequency and signal file names of a WFDB header; None if malformed.

    Parsed by hand rather than with ``wfdb.rdheader``, which is ~10x slower over thousands of records.
    """
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    first = lines[0].split() if lines else []
    if len(first) < 2 or not first[1].isdigit() or len(lines) < 1 + int(first[1]):
        return None
    rate = _RATE.match(first[2]) if len(first) > 2 else None
    signals = [line.split(maxsplit=8) for line in lines[1 : 1 + int(first[1])]]
    names = [fields[8] for fields in signals if len(fields) == 9]
    # WFDB's default frequency when a header omits it
    return names, float(rate.group()) if rate else 250.0, {fields[0] for fields in signals}
