"""``deepwe validate``: every problem of a cohort in one run, and a summary when there are none."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from data_schemas import CohortSpec, Problem
from data_schemas.cohort import SPLIT_VALUES, canonical_label
from encoders.readers import sniff_file
from pipelines.cohort import Cohort, is_missing, read_table, split_unit
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
class ValidationReport:
    """Problems (empty when the cohort is valid) and, for a valid cohort, its summary and the loaded cohort."""

    spec_path: Path
    problems: list[Problem] = field(default_factory=list)
    summary: CohortSummary | None = None
    cohort: Cohort | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_cohort(spec_path: str | Path, *, check_files: bool = True) -> ValidationReport:
    """Check a cohort spec, its table and (``check_files``) the header of every referenced file."""
    spec_path = Path(spec_path).resolve()
    report = ValidationReport(spec_path=spec_path)
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
    report.problems += _check_rows(cohort, str(table_path), check_files)
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


def _check_rows(cohort: Cohort, file: str, check_files: bool) -> list[Problem]:
    spec, table = cohort.spec, cohort.table
    problems: list[Problem] = []
    classes = spec.outcome.class_labels() if spec.outcome is not None else None
    split_column = spec.split.column if spec.split is not None else None
    group_column = spec.split.group if spec.split is not None else None
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
        if group_column is not None and is_missing(values[group_column]):
            problem(group_column, None, "a group value for split.group (rows are split by group)")
        any_present = False
        for name, modality in spec.modalities.items():
            if modality.kind == "tabular":
                for column in modality.numeric:
                    raw = values[column]
                    if not is_missing(raw) and not _is_finite_number(raw):
                        problem(
                            column,
                            raw,
                            f"a number for numeric variable {column!r} of {name!r}, or blank",
                        )
                any_present |= any(not is_missing(values[c]) for c in modality.columns())
                continue
            cell = values[modality.column]
            if is_missing(cell):
                continue
            any_present = True
            if modality.kind == "text" and modality.inline:
                continue
            reason = _check_path(cohort, str(cell), modality.kind, check_files)
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


def _check_path(cohort: Cohort, cell: str, kind: str, check_files: bool) -> str | None:
    try:
        path = cohort.resolve(cell)
    except ValueError as error:
        return str(error)
    if not path.exists():
        return f"an existing {kind} file under {cohort.data_root}"
    if not check_files:
        return None
    return remembered(("sniff", kind), str(path), lambda file: sniff_file(file, kind))


def _is_finite_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))
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
