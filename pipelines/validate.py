"""``deepwe validate``: every problem of a cohort in one run, and a summary when there are none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from data_schemas import CohortSpec, Problem
from data_schemas.cohort import SPLIT_VALUES, SensorModality, canonical_label
from encoders.readers import ReaderError, sniff_file
from encoders.readers.tabular import FLOAT32_MAX
from pipelines.cohort import Cohort, is_missing, read_table
from pipelines.decoded_files import remembered
from pipelines.spec_io import did_you_mean, read_spec


@dataclass
class CohortSummary:
    """What a valid cohort holds."""

    rows: int
    outcome_counts: dict[str, int]
    unlabelled: int
    split_counts: dict[str, int]
    availability: dict[str, int]
    patterns: list[tuple[str, int]]

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "outcome_counts": self.outcome_counts,
            "unlabelled": self.unlabelled,
            "split_counts": self.split_counts,
            "availability": self.availability,
            "patterns": [{"present": p, "rows": n} for p, n in self.patterns],
        }


@dataclass
class FileTally:
    """How many referenced files validate looked at, and what their readers skipped.

    Attributes:
        checked: files found on disk (with ``headers`` their headers were read too).
        read: sensor files read whole, the way ``predict`` reads them.
        headers: whether headers were checked (False under ``--skip-file-headers``).
        skipped: modality -> reason -> lines, rows or cells skipped in its files.
        rows_with_skipped: modality -> rows whose file had something skipped.
    """

    checked: int = 0
    read: int = 0
    headers: bool = True
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_with_skipped: dict[str, int] = field(default_factory=dict)

    def add_skipped(self, modality: str, skipped: dict[str, int]) -> None:
        self.rows_with_skipped[modality] = self.rows_with_skipped.get(modality, 0) + 1
        totals = self.skipped.setdefault(modality, {})
        for reason, count in skipped.items():
            totals[reason] = totals.get(reason, 0) + count

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "read": self.read,
            "headers": self.headers,
            "skipped": self.skipped,
            "rows_with_skipped": self.rows_with_skipped,
        }


@dataclass
class ValidationReport:
    """Problems (empty when the cohort is valid) and, for a valid cohort, its summary and the loaded cohort."""

    spec_path: Path
    problems: list[Problem] = field(default_factory=list)
    summary: CohortSummary | None = None
    cohort: Cohort | None = None
    files: FileTally = field(default_factory=FileTally)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_cohort(spec_path: str | Path, *, check_files: bool = True) -> ValidationReport:
    """Check a cohort spec, its table and every referenced file.

    With ``check_files`` the header of every file is read, and every sensor file is read whole the
    way ``predict`` reads it (skipped lines are counted in ``report.files``); without it, files are
    only checked to exist.
    """
    spec_path = Path(spec_path).resolve()
    report = ValidationReport(spec_path=spec_path, files=FileTally(headers=check_files))
    spec, report.problems = read_spec(spec_path)
    if spec is None:
        return report
    table_path = spec_path.parent / spec.table
    try:
        table = read_table(table_path)
    except ValueError as error:
        report.problems.append(Problem(file=str(table_path), column="table", expected=str(error)))
        return report
    cohort = Cohort(spec=spec, spec_path=spec_path, table=table)
    if spec.data_root and not cohort.data_root.is_dir():
        report.problems.append(
            Problem(
                file=str(spec_path),
                column="data_root",
                value=spec.data_root,
                expected="an existing folder",
            )
        )
        return report
    missing_columns = missing_column_problems(spec, list(table.columns), str(table_path))
    report.problems += missing_columns
    if spec.id not in table.columns:
        return report
    # Check the rows as if the missing columns were blank, so one run finds everything.
    for problem in missing_columns:
        table[problem.column] = None
    report.problems += _check_rows(cohort, str(table_path), report.files)
    if report.ok:
        report.summary = summarise(cohort)
        report.cohort = cohort
    return report


def missing_column_problems(
    spec: CohortSpec, columns: list[str], file: str, *, optional: tuple[str, ...] = ()
) -> list[Problem]:
    """A problem for each column the spec names that the table lacks (roles in ``optional`` may be absent)."""
    return [
        Problem(
            file=file,
            column=column,
            expected=f"a column named by {role} in the table{did_you_mean(column, columns)}",
        )
        for column, role in spec.column_roles()
        if column not in columns and role not in optional
    ]


def id_problems(ids: Iterable[object], column: str, file: str) -> list[Problem]:
    """A problem for each blank patient id and for each id already used by an earlier row."""
    problems = []
    first_row_of: dict[str, int] = {}
    for row, value in enumerate(ids, start=1):
        if is_missing(value):
            problems.append(
                Problem(
                    file=file,
                    row=row,
                    column=column,
                    expected="a patient id (blank ids cannot be joined or audited)",
                )
            )
            continue
        key = str(value).strip()
        if key in first_row_of:
            problems.append(
                Problem(
                    file=file,
                    row=row,
                    column=column,
                    value=_show(key),
                    expected=f"a unique patient id; row {first_row_of[key]} has the same id",
                )
            )
        first_row_of.setdefault(key, row)
    return problems


def _check_rows(cohort: Cohort, file: str, files: FileTally) -> list[Problem]:
    spec, table = cohort.spec, cohort.table
    problems: list[Problem] = []
    classes = spec.outcome.class_labels() if spec.outcome is not None else None
    split_column = spec.split.column if spec.split is not None else None
    for row, values in enumerate(table.to_dict("records"), start=1):

        def problem(column: str | None, value: object, expected: str, row: int = row) -> None:
            problems.append(Problem(file=file, row=row, column=column, value=_show(value), expected=expected))

        if spec.outcome is not None and classes is not None:
            raw = values[spec.outcome.column]
            if not is_missing(raw) and canonical_label(raw) not in classes:
                problem(
                    spec.outcome.column,
                    raw,
                    f"an outcome in the declared classes {classes} (or blank)",
                )
        if split_column is not None:
            raw = values[split_column]
            if is_missing(raw) or str(raw).strip().lower() not in SPLIT_VALUES:
                problem(
                    split_column,
                    raw,
                    f"one of {', '.join(SPLIT_VALUES)}{did_you_mean(raw, SPLIT_VALUES)}",
                )
        any_present = False
        for name, modality in spec.modalities.items():
            if modality.kind == "tabular":
                for column in modality.numeric:
                    raw = values[column]
                    if not is_missing(raw) and not _is_finite_number(raw):
                        problem(
                            column,
                            raw,
                            f"a number for numeric variable {column!r} of {name!r} (finite, at "
                            f"most {FLOAT32_MAX:.3g} in magnitude), or blank",
                        )
                any_present |= any(not is_missing(values[c]) for c in modality.columns())
                continue
            cell = values[modality.column]
            if is_missing(cell):
                continue
            any_present = True
            if modality.kind == "text" and modality.inline:
                continue
            reason = _check_path(cohort, str(cell), name, modality, files)
            if reason:
                problem(modality.column, cell, reason)
        if not any_present:
            problem(
                None,
                None,
                f"at least one modality present (this row has none of {', '.join(spec.modalities)})",
            )
    problems += id_problems(table[spec.id], spec.id, file)
    return sorted(problems, key=lambda p: p.row or 0)


def _check_path(cohort: Cohort, cell: str, name: str, modality: object, files: FileTally) -> str | None:
    """What is wrong with a file cell (None when nothing is), counting it in ``files``."""
    kind = modality.kind
    try:
        path = cohort.resolve(cell)
    except ValueError as error:
        return str(error)
    if not path.exists():
        return f"an existing {kind} file under {cohort.data_root}"
    files.checked += 1
    if not files.headers:
        return None
    problem = remembered(("sniff", kind), str(path), lambda file: sniff_file(file, kind))
    if problem is not None or not isinstance(modality, SensorModality):
        return problem
    from pipelines.dataset import read_sensor_file  # torch comes with it: only when files are read

    files.read += 1
    try:
        array = read_sensor_file(str(path), modality)
    except ReaderError as error:
        return f"a readable {kind} file; {error.reason}"
    if array.skipped:
        files.add_skipped(name, dict(array.skipped))
    return None


def _is_finite_number(value: object) -> bool:
    """A number the model can hold: finite and within float32 range."""
    try:
        return abs(float(value)) <= FLOAT32_MAX
    except (TypeError, ValueError):
        return False


def _show(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def summarise(cohort: Cohort) -> CohortSummary:
    """Rows, outcome balance, split sizes, availability per modality and missing-modality patterns."""
    spec = cohort.spec
    records = list(cohort.records())
    outcomes = Counter(r.outcome for r in records if r.outcome is not None)
    splits = Counter(r.split or "none" for r in records)
    availability = {name: 0 for name in spec.modalities}
    patterns: Counter[str] = Counter()
    for record in records:
        present = record.present()
        for name, flag in present.items():
            availability[name] += int(flag)
        patterns[" + ".join(n for n in spec.modalities if present[n]) or "(none)"] += 1
    return CohortSummary(
        rows=len(records),
        outcome_counts=dict(sorted(outcomes.items())),
        unlabelled=sum(r.outcome is None for r in records),
        split_counts=dict(sorted(splits.items())),
        availability=availability,
        patterns=patterns.most_common(5),
    )
