"""What every importer shares: its result, the checks on its source, and writing the cohort."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_schemas import CohortSpec

SPEC_NAME = "cohort.yaml"
TABLE_NAME = "cohort.csv"


@dataclass(frozen=True)
class ImportResult:
    """What an importer wrote.

    Attributes:
        spec_path: the cohort spec (``DIR/cohort.yaml``); its table lies beside it.
        rows: table rows written.
        outcome_counts: rows per outcome value (blank outcomes counted under ``""``).
        skipped: source items left out, by reason (``{"record without an outcome": 4}``).
        notes: other facts worth printing (values that disagree, subsets taken).
    """

    spec_path: Path
    rows: int
    outcome_counts: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def require_folder(path: Path, expected: str) -> Path:
    """``path`` as an absolute folder; a ValueError naming it and ``expected`` when it is not one."""
    if not path.is_dir():
        raise ValueError(f"{path}: expected {expected}, but there is no such folder")
    return path.resolve()


def require_file(path: Path, expected: str) -> Path:
    """``path`` as an absolute file; a ValueError naming it and ``expected`` when it is not one."""
    if not path.is_file():
        raise ValueError(f"{path}: expected {expected}, but there is no such file")
    return path.resolve()


def read_csv_rows(path: Path, required: Iterable[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, every cell stripped.

    Raises:
        ValueError: the file is not UTF-8 text or lacks one of the ``required`` columns.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
            columns = reader.fieldnames or []
    except UnicodeDecodeError:
        raise ValueError(f"{path}: expected {what} as UTF-8 text") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: expected {what} with the columns {', '.join(missing)} in its header line")
    return rows


def write_cohort(
    out: Path,
    spec: Mapping[str, object],
    columns: list[str],
    rows: list[dict[str, str]],
    *,
    skipped: Mapping[str, int] | None = None,
    notes: Iterable[str] = (),
) -> ImportResult:
    """Write ``out/cohort.csv`` (``columns`` of ``rows``; a missing key is a blank cell) and its spec.

    The spec is checked by :class:`CohortSpec` first, so an importer cannot write one that the
    validator would refuse to parse.
    """
    cohort = CohortSpec.model_validate({"table": TABLE_NAME, **spec})
    out.mkdir(parents=True, exist_ok=True)
    with (out / TABLE_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row.get(c, "") for c in columns] for row in rows)
    spec_path = out / SPEC_NAME
    spec_path.write_text(
        f"# Written by `deepwe import`; check it with `deepwe validate {SPEC_NAME}`\n"
        + yaml.safe_dump(cohort.model_dump(mode="json", exclude_none=True), sort_keys=False),
        encoding="utf-8",
    )
    outcome = cohort.outcome.column if cohort.outcome is not None else None
    counts = Counter(row.get(outcome, "") for row in rows) if outcome else Counter()
    return ImportResult(
        spec_path=spec_path,
        rows=len(rows),
        outcome_counts=dict(sorted(counts.items())),
        skipped={reason: n for reason, n in (skipped or {}).items() if n},
        notes=tuple(notes),
    )
