"""``deepwe validate``: every problem of a cohort in one run, and a summary when there are none."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data_schemas import CohortSpec, Problem
from data_schemas.cohort_spec import SPLIT_VALUES, SensorModality, canonical_label
from encoders.readers import ReaderError, sniff_file
from encoders.readers.tabular_files import FLOAT32_MAX
from pipelines.cohorts.cohort_table import Cohort, assign_split, is_missing, read_table, split_unit
from pipelines.cohorts.decoded_cache import decoded
from pipelines.cohorts.spec_io import did_you_mean, read_spec


@dataclass
class CohortSummary:
    """What a valid cohort holds."""

    rows: int
    outcome_counts: dict[str, int]
    unlabelled: int
    split_counts: dict[str, int]
    availability: dict[str, int]
    patterns: list[tuple[str, int]]
    split_unit: str = ""
    group_sizes: dict[str, int] | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "outcome_counts": self.outcome_counts,
            "unlabelled": self.unlabelled,
            "split_counts": self.split_counts,
            "availability": self.availability,
            "patterns": [{"present": p, "rows": n} for p, n in self.patterns],
            "split_unit": self.split_unit,
            "group_sizes": self.group_sizes,
            "warnings": self.warnings,
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
        return asdict(self)


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
    return _check_loaded(Cohort(spec=spec, spec_path=spec_path, table=table), report, str(table_path))


def validate_loaded(cohort: Cohort, *, check_files: bool = True) -> ValidationReport:
    """:func:`validate_cohort` for a cohort already in memory (``Cohort.from_frame``): the same row,
    column and file checks, with problems located in the table by row and column."""
    report = ValidationReport(spec_path=cohort.spec_path, files=FileTally(headers=check_files))
    return _check_loaded(
        Cohort(
            spec=cohort.spec,
            spec_path=cohort.spec_path,
            table=cohort.table.copy(),
            in_memory=cohort.in_memory,
        ),
        report,
        str(cohort.table_path),
    )


def _check_loaded(cohort: Cohort, report: ValidationReport, table_file: str) -> ValidationReport:
    """Check the rows, columns and files of a loaded cohort into ``report`` (its summary and cohort
    are set when there is no problem)."""
    spec, spec_path, table, table_path = cohort.spec, cohort.spec_path, cohort.table, table_file
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
    """Every cell problem, in row order (within a row: outcome, split, variables, files, ids).

    Column by column, so that half a million rows take seconds: each check yields
    ``(row, check number, problem)``.
    """
    spec, table = cohort.spec, cohort.table
    found: list[tuple[int, int, Problem]] = []

    def problem(check: int, row: int, column: str | None, value: object, expected: str) -> None:
        found.append(
            (row, check, Problem(file=file, row=row, column=column, value=_show(value), expected=expected))
        )

    classes = spec.outcome.class_labels() if spec.outcome is not None else None
    if spec.outcome is not None and classes is not None:
        column = spec.outcome.column
        for row, raw in _cells(table[column]):
            if canonical_label(raw) not in classes:
                problem(0, row, column, raw, f"an outcome in the declared classes {classes} (or blank)")
    if spec.split is not None and spec.split.column is not None:
        column = spec.split.column
        lowered = table[column].map(lambda v: None if v is None else str(v).strip().lower())
        for position in np.flatnonzero(~lowered.isin(SPLIT_VALUES).to_numpy()):
            raw = table[column].iat[position]
            expected = f"one of {', '.join(SPLIT_VALUES)}{did_you_mean(raw, SPLIT_VALUES)}"
            problem(1, int(position) + 1, column, raw, expected)
    if spec.split is not None and spec.split.group is not None:
        column = spec.split.group
        for position in np.flatnonzero(table[column].isna().to_numpy()):
            problem(
                1, int(position) + 1, column, None, "a group value for split.group (rows are split by group)"
            )
    any_present = np.zeros(len(table), dtype=bool)
    check = 2
    for name, modality in spec.modalities.items():
        any_present |= table[modality.columns()].notna().any(axis=1).to_numpy()
        if modality.kind == "tabular":
            for column in modality.numeric:
                expected = (
                    f"a number for numeric variable {column!r} of {name!r} (finite, at most "
                    f"{FLOAT32_MAX:.3g} in magnitude), or blank"
                )
                for row, raw in _cells(table[column]):
                    if not _is_finite_number(raw):
                        problem(check, row, column, raw, expected)
                check += 1
            continue
        if modality.kind == "text" and modality.inline:
            continue
        for row, cell in _cells(table[modality.column]):
            reason = _check_path(cohort, str(cell), name, modality, files)
            if reason:
                problem(check, row, modality.column, cell, reason)
        check += 1
    everything = ", ".join(spec.modalities)
    for position in np.flatnonzero(~any_present):
        problem(
            check,
            int(position) + 1,
            None,
            None,
            f"at least one modality present (this row has none of {everything})",
        )
    found += [(p.row or 0, check + 1, p) for p in id_problems(table[spec.id], spec.id, file)]
    found.sort(key=lambda item: (item[0], item[1]))
    return [p for _, _, p in found]


def _cells(series: pd.Series) -> Iterator[tuple[int, object]]:
    """(1-based row, value) of every non-missing cell of a table column."""
    values = series.to_numpy()
    for position in np.flatnonzero(series.notna().to_numpy()):
        yield int(position) + 1, values[position]


def _check_path(cohort: Cohort, cell: str, name: str, modality: object, files: FileTally) -> str | None:
    """What is wrong with a file cell (None when nothing is), counting it in ``files``."""
    kind = modality.kind
    try:
        path = cohort.resolve_text(cell)
    except ValueError as error:
        return str(error)
    if not os.path.exists(path):
        return f"an existing {kind} file under {cohort.data_root}"
    files.checked += 1
    if not files.headers:
        return None
    problem = decoded(("sniff", kind), path, lambda file: sniff_file(file, kind), persist=False)
    if problem is not None or not isinstance(modality, SensorModality):
        return problem
    from pipelines.cohorts.dataset import read_sensor_file  # torch comes with it: only when files are read

    files.read += 1
    try:
        array = read_sensor_file(path, modality)
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
    spec, table = cohort.spec, cohort.table
    present = pd.DataFrame(
        {name: table[m.columns()].notna().any(axis=1) for name, m in spec.modalities.items()}
    )
    outcomes: Counter[str] = Counter()
    unlabelled = len(table)
    if spec.outcome is not None:
        labels = table[spec.outcome.column].dropna()
        outcomes = Counter(canonical_label(v) for v in labels)
        unlabelled = len(table) - len(labels)
    if spec.split is not None and spec.split.column is not None:
        splits = table[spec.split.column].map(lambda v: "none" if v is None else str(v).strip().lower())
    elif spec.split is not None and spec.split.group is not None:
        splits = pd.Series([cohort.split_of(row) for row in range(1, len(table) + 1)], dtype=object)
    else:
        splits = table[spec.id].map(lambda pid: assign_split(str(pid).strip(), spec.split))
    patterns: Counter[str] = Counter()
    for flags, count in present.value_counts(sort=False).items():
        shown = " + ".join(n for n, flag in zip(present.columns, flags, strict=True) if flag) or "(none)"
        patterns[shown] += int(count)
    return CohortSummary(
        rows=len(table),
        outcome_counts=dict(sorted(outcomes.items())),
        unlabelled=unlabelled,
        split_counts=dict(sorted(Counter(splits).items())),
        availability={name: int(present[name].sum()) for name in spec.modalities},
        patterns=patterns.most_common(5),
        split_unit=split_unit(spec),
        group_sizes=group_sizes(cohort),
        warnings=repeated_subject_warnings(cohort),
    )


def group_sizes(cohort: Cohort) -> dict[str, int] | None:
    """Groups of ``split.group`` and their sizes (rows per group), or None without a group."""
    split = cohort.spec.split
    if split is None or split.group is None:
        return None
    sizes = cohort.table[split.group].astype(str).str.strip().value_counts()
    return {
        "groups": len(sizes),
        "rows": int(sizes.sum()),
        "largest": int(sizes.max()) if len(sizes) else 0,
        "groups_with_several_rows": int((sizes > 1).sum()),
    }


_SUBJECT_COLUMN = re.compile(
    r"(?:^|[ _-])(?:patient|subject|person|member|mrn|pid|client)(?:[ _-]?(?:id|nr|no|number|key))?$", re.I
)


def repeated_subject_warnings(cohort: Cohort) -> list[str]:
    """A warning for each column named like a patient or subject id whose values repeat while the
    split is drawn per row: one patient's rows would then land in train and test alike."""
    split = cohort.spec.split
    if split is not None and (split.group is not None or split.column is not None):
        return []
    warnings = []
    for column in cohort.table.columns:
        if column == cohort.spec.id or not _SUBJECT_COLUMN.search(str(column)):
            continue
        values = cohort.table[column].dropna().astype(str).str.strip()
        repeats = int(values.duplicated().sum())
        if repeats:
            warnings.append(
                f"column {column!r} looks like a patient id and repeats ({repeats} rows share a value "
                f"with an earlier row), but the split is drawn per row: set split.group: {column} so "
                "that one patient's rows cannot land in both train and test"
            )
    return warnings
