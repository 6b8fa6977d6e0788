"""``split.group``: all rows of a group fall in one split; validate reports groups and warns without one."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from data_schemas import SplitSpec
from pipelines.cohorts.cohort_table import load_cohort, split_unit
from pipelines.cohorts.validate import validate_cohort


def _add_subjects(folder, *, group: bool, rows_per_subject: int = 3) -> None:
    """Give the cohort a ``subject_id`` column (``rows_per_subject`` rows each) and maybe split.group."""
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    table["subject_id"] = [f"s{i // rows_per_subject}" for i in range(len(table))]
    table.to_csv(folder / "cohort.csv", index=False)
    spec = yaml.safe_load((folder / "cohort.yaml").read_text())
    spec.pop("split", None)
    if group:
        spec["split"] = {"group": "subject_id", "seed": 3}
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_group_and_column_together_are_refused():
    with pytest.raises(ValidationError, match=r"split\.group applies to a drawn split"):
        SplitSpec(column="split", group="subject_id")


def test_rows_of_a_group_share_a_split(editable_cohort):
    _add_subjects(editable_cohort, group=True)
    cohort = load_cohort(editable_cohort / "cohort.yaml")
    by_subject: dict[str, set[str]] = {}
    for record in cohort.records():
        subject = cohort.table.at[record.row - 1, "subject_id"]
        by_subject.setdefault(subject, set()).add(record.split)
    assert len(by_subject) == 11
    assert all(len(splits) == 1 for splits in by_subject.values())
    # The groups are spread over the splits, not all put in one.
    assert len(set().union(*by_subject.values())) >= 2


def test_per_row_split_separates_a_subjects_rows(editable_cohort):
    """The leak split.group exists to stop: without it some subject's rows straddle splits."""
    _add_subjects(editable_cohort, group=False)
    cohort = load_cohort(editable_cohort / "cohort.yaml")
    by_subject: dict[str, set[str]] = {}
    for record in cohort.records():
        by_subject.setdefault(cohort.table.at[record.row - 1, "subject_id"], set()).add(record.split)
    assert any(len(splits) > 1 for splits in by_subject.values())


def test_validate_reports_group_sizes_and_the_split_unit(editable_cohort):
    _add_subjects(editable_cohort, group=True)
    report = validate_cohort(editable_cohort / "cohort.yaml", check_files=False)
    assert report.ok, report.problems
    summary = report.summary
    assert summary.group_sizes == {"groups": 11, "rows": 31, "largest": 3, "groups_with_several_rows": 10}
    assert "group 'subject_id'" in summary.split_unit
    assert summary.warnings == []


def test_validate_warns_when_a_subject_column_repeats_without_a_group(editable_cohort):
    _add_subjects(editable_cohort, group=False)
    report = validate_cohort(editable_cohort / "cohort.yaml", check_files=False)
    assert report.ok, report.problems
    assert summary_warning(report) and "set split.group: subject_id" in summary_warning(report)
    assert report.summary.group_sizes is None
    assert "per row id" in report.summary.split_unit


def summary_warning(report) -> str:
    assert len(report.summary.warnings) == 1
    return report.summary.warnings[0]


def test_a_blank_group_value_is_a_problem(editable_cohort):
    _add_subjects(editable_cohort, group=True)
    table = pd.read_csv(editable_cohort / "cohort.csv", dtype=str, keep_default_na=False)
    table.loc[4, "subject_id"] = ""
    table.to_csv(editable_cohort / "cohort.csv", index=False)
    report = validate_cohort(editable_cohort / "cohort.yaml", check_files=False)
    assert [(p.row, p.column) for p in report.problems] == [(5, "subject_id")]
    assert "split.group" in report.problems[0].expected


def test_split_unit_names_the_column_the_group_or_the_id(editable_cohort):
    spec = load_cohort(editable_cohort / "cohort.yaml").spec
    with_column = spec.model_copy(update={"split": SplitSpec(column="split")})
    assert split_unit(with_column) == "the spec's split column 'split'"
    with_group = spec.model_copy(update={"split": SplitSpec(group="subject_id")})
    assert split_unit(with_group).startswith("drawn per group 'subject_id'")
