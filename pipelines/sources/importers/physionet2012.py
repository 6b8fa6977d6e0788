"""PhysioNet/CinC Challenge 2012: ICU stays as a static tabular plus a 48 h time-series modality.

Layout of ``SRC``: one or more ``set-*/NNNNNN.txt`` folders of records in the long format
``Time,Parameter,Value`` and ``Outcomes-*.txt`` tables (``RecordID,SAPS-I,SOFA,...,In-hospital_death``).
The record files stay where they are: the spec's ``data_root`` is ``SRC``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.sources.importers._common import (
    ImportResult,
    read_csv_rows,
    require_folder,
    write_cohort,
)

STATIC_NUMERIC = ("Age", "Height", "Weight")
STATIC_CATEGORICAL = ("Gender", "ICUType")
STATIC = (*STATIC_NUMERIC, *STATIC_CATEGORICAL)
ID = "RecordID"
OUTCOME = "In-hospital_death"
BASELINES = ("SAPS-I", "SOFA")
UNKNOWN = -1.0
PERIOD_S = 60  # times are HH:MM: on a one-minute grid every measurement keeps its own cell
SUMMED = ("Urine",)  # urine output is an amount per measurement: two in one cell add up
DURATION_S = 48 * 3600
HEADER = "Time,Parameter,Value"
LAYOUT = "a PhysioNet 2012 folder: set-*/NNNNNN.txt record files and Outcomes-*.txt tables"

_STATIC_LINE = re.compile(r"^00:00,(RecordID|Age|Gender|Height|ICUType|Weight),([^\r\n]*)", re.M)
_PARAMETER = re.compile(r"^[^,\r\n]*,([^,\r\n]*),", re.M)


@dataclass(frozen=True)
class _Record:
    record_id: str
    set_name: str
    path: str  # relative to SRC
    static: dict[str, str]  # blank when unknown
    channels: frozenset[str]
    conflicting: bool  # a static variable with several different values at 00:00


def import_physionet2012(src: str | Path, out: str | Path) -> ImportResult:
    """Write a cohort of every record of ``src`` that has an outcome.

    Table columns: ``RecordID``, ``In-hospital_death`` (outcome, binary), ``Age``, ``Height``,
    ``Weight`` (numeric) and ``Gender``, ``ICUType`` (categorical) from the 00:00 block of each
    record (``-1`` = unknown -> blank; the first value where one is repeated), ``age_band``,
    ``SAPS-I`` and ``SOFA`` (baseline scores, in no modality), ``set`` (the source folder) and
    ``record_path``. Channels of the time-series modality are every parameter measured outside the
    static block of the imported records, sorted.

    Raises:
        ValueError: ``src`` is not laid out as PhysioNet 2012, or an outcomes table is malformed.
    """
    src = require_folder(Path(src), LAYOUT)
    files = sorted(
        (p for p in src.glob("set-*/*.txt") if p.stem.isdigit()),
        key=lambda p: (p.parent.name, p.name),
    )
    if not files:
        raise ValueError(f"{src}: expected {LAYOUT}, but found no set-*/NNNNNN.txt record files")
    outcomes = _read_outcomes(src)
    skipped = {"unreadable record file": 0, "record without an outcome": 0, "duplicate record": 0}
    rows, channels, seen = [], set(), set()
    conflicting = without_series = 0
    for path in files:
        if path.stem in seen:
            skipped["duplicate record"] += 1
            continue
        seen.add(path.stem)
        record = _read_record(path, src)
        if record is None:
            skipped["unreadable record file"] += 1
            continue
        if record.record_id not in outcomes:
            skipped["record without an outcome"] += 1
            continue
        conflicting += record.conflicting
        without_series += not record.channels
        channels |= record.channels
        rows.append(_row(record, outcomes[record.record_id]))
    skipped["outcome without a record file"] = len(outcomes.keys() - seen)
    if not channels:
        raise ValueError(f"{src}: expected records with time-series lines after the 00:00 block")
    notes = []
    if conflicting:
        notes.append(
            f"{conflicting} records hold several different values of a static variable at 00:00; "
            "the first was kept"
        )
    if without_series:
        notes.append(f"{without_series} records have no time series (record_path left blank)")
    absent = [name for name in STATIC if not any(row[name] for row in rows)]
    if absent:
        notes.append(f"no record has a value for {', '.join(absent)} (the column is blank)")
    return write_cohort(
        Path(out),
        _spec(src, sorted(channels)),
        [ID, OUTCOME, *STATIC, "age_band", *BASELINES, "set", "record_path"],
        rows,
        skipped=skipped,
        notes=notes,
    )


def _spec(src: Path, channels: list[str]) -> dict[str, object]:
    return {
        "name": "physionet2012",
        "description": (
            "PhysioNet/CinC Challenge 2012 ICU stays, first 48 h; in-hospital death. ODC-By 1.0, "
            "Silva et al., CinC 2012. SAPS-I and SOFA are baseline scores, not model inputs."
        ),
        "data_root": str(src),
        "id": ID,
        "outcome": {"column": OUTCOME, "task": "binary", "positive": 1},
        "modalities": {
            "static": {
                "kind": "tabular",
                "numeric": list(STATIC_NUMERIC),
                "categorical": list(STATIC_CATEGORICAL),
            },
            "timeseries": {
                "kind": "sensor",
                "column": "record_path",
                "channels": channels,
                "summed_channels": [name for name in SUMMED if name in channels],
                "period_s": PERIOD_S,
                "duration_s": DURATION_S,
            },
        },
        "subgroups": ["Gender", "age_band", "ICUType"],
    }


def _read_record(path: Path, src: Path) -> _Record | None:
    """Static values and channel names of one record; None when it is not a 2012 record."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError):
        return None
    first, _, body = text.partition("\n")
    if first.strip().replace(" ", "") != HEADER:
        return None
    values: dict[str, list[str]] = {}
    for name, value in _STATIC_LINE.findall(body):
        values.setdefault(name, []).append(value.strip())
    static = {name: _known(values[name][0]) if name in values else "" for name in STATIC}
    conflicting = any(len({_known(v) for v in vs}) > 1 for vs in values.values())
    # A static name is also a channel where it is measured after 00:00 (Weight is).
    channels = {
        name
        for name in _parameters(body)
        if name and (name not in values or body.count(f",{name},") > len(values[name]))
    }
    return _Record(
        record_id=path.stem,
        set_name=path.parent.name,
        path=path.relative_to(src).as_posix(),
        static=static,
        channels=frozenset(channels),
        conflicting=conflicting,
    )


def _parameters(body: str) -> set[str]:
    """The parameter names of ``Time,Parameter,Value`` lines."""
    fields = body.split(",")
    lines = body.count("\n") + (not body.endswith("\n"))
    if len(fields) == 2 * lines + 1:  # two commas a line: the names are every other field
        names = set(fields[1::2])
        if not any("\n" in name for name in names):
            return names
    return set(_PARAMETER.findall(body))


def _read_outcomes(src: Path) -> dict[str, dict[str, str]]:
    """RecordID -> its outcomes row, from every ``Outcomes-*.txt`` of ``src``."""
    tables = sorted(src.glob("Outcomes-*.txt"))
    if not tables:
        raise ValueError(f"{src}: expected {LAYOUT}, but found no Outcomes-*.txt table")
    outcomes: dict[str, dict[str, str]] = {}
    for table in tables:
        rows = read_csv_rows(table, (ID, OUTCOME, *BASELINES), "a PhysioNet 2012 outcomes table")
        for number, row in enumerate(rows, start=1):
            if row[OUTCOME] not in ("0", "1"):
                raise ValueError(f"{table}, data row {number}: expected {OUTCOME} 0 or 1")
            if row[ID] in outcomes:
                raise ValueError(f"{table}, data row {number}: expected one outcome per {ID}, found a repeat")
            outcomes[row[ID]] = row
    return outcomes


def _row(record: _Record, outcome: dict[str, str]) -> dict[str, str]:
    return {
        ID: record.record_id,
        OUTCOME: outcome[OUTCOME],
        **record.static,
        "age_band": age_band(record.static["Age"]),
        **{name: _known(outcome[name]) for name in BASELINES},
        "set": record.set_name,
        "record_path": record.path if record.channels else "",
    }


def age_band(age: str) -> str:
    """``<50``, ``50-64``, ``65-79`` or ``80+`` for an age in years; blank when unknown."""
    if not age:
        return ""
    years = float(age)
    return "<50" if years < 50 else "50-64" if years < 65 else "65-79" if years < 80 else "80+"


def _known(value: str) -> str:
    """The value as written, or blank for the challenge's unknown (-1) and anything not a number."""
    try:
        number = float(value)
    except ValueError:
        return ""
    return value if math.isfinite(number) and number != UNKNOWN else ""
