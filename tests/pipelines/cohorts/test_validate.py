from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile
import yaml
from PIL import Image

from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.synth import LAB_VALUES


def _edit_table(folder: Path, edits: dict[tuple[int, str], str]) -> None:
    """Set 1-based (row, column) cells of cohort.csv."""
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    for (row, column), value in edits.items():
        table.loc[row - 1, column] = value
    table.to_csv(folder / "cohort.csv", index=False)


def _edit_spec(folder: Path, change) -> None:
    data = yaml.safe_load((folder / "cohort.yaml").read_text())
    change(data)
    (folder / "cohort.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_synthetic_cohort_is_valid_and_summarised(synth_cohort):
    report = validate_cohort(synth_cohort / "cohort.yaml")
    assert report.ok, report.problems
    summary = report.summary
    assert summary.rows == 31
    assert sum(summary.outcome_counts.values()) == 31
    assert summary.availability["labs"] == 31
    assert 0 < summary.availability["cxr"] < 31
    assert sum(n for _, n in summary.patterns) <= 31
    assert summary.patterns[0][1] >= summary.patterns[-1][1]


def test_a_dozen_planted_faults_are_all_reported(editable_cohort, tmp_path):
    data = editable_cohort
    outside = tmp_path / "outside.wav"
    soundfile.write(outside, [0.0, 0.1, -0.1, 0.0], 4000)
    (data / "pcg" / "link.wav").symlink_to(outside)
    Image.new("L", (8, 8)).save(data / "cxr" / "fake.dcm", format="PNG")
    (data / "pcg" / "empty.wav").write_bytes(b"")
    (data / "vitals" / "record.txt").write_text("hello\n")
    first_id = pd.read_csv(data / "cohort.csv", dtype=str)["patient_id"][0]
    every_modality = ["age", "sex", "admission_type", *LAB_VALUES, "note_path", "cxr_path", "pcg_path"]
    blank_row = {(11, c): "" for c in [*every_modality, "vitals_path", "ecg_path"]}
    _edit_table(
        data,
        {
            (2, "patient_id"): first_id,
            (3, "died"): "2",
            (4, "lactate"): "high",
            (5, "note_path"): "notes/does-not-exist.txt",
            (6, "note_path"): "../outside.txt",
            (7, "cxr_path"): "/etc/hostname",
            (8, "pcg_path"): "pcg/link.wav",
            (9, "cxr_path"): "cxr/fake.dcm",
            (10, "pcg_path"): "pcg/empty.wav",
            **blank_row,
            (12, "split"): "tran",
            (13, "vitals_path"): "vitals/record.txt",
        },
    )

    def misspell(spec):
        spec["subgroup"] = spec.pop("subgroups")
        spec["modalities"]["cxr"]["windw"] = 400

    _edit_spec(data, misspell)

    report = validate_cohort(data / "cohort.yaml")

    found = {(p.row, p.column): p for p in report.problems}
    spec_problems = [p for p in report.problems if p.row is None]
    assert len(report.problems) == 14, "\n".join(map(str, report.problems))
    assert {p.value for p in spec_problems} == {"subgroup", "windw"}
    subgroup = next(p for p in spec_problems if p.value == "subgroup")
    assert "did you mean 'subgroups'" in subgroup.expected and subgroup.line is not None
    assert found[(2, "patient_id")].value == first_id and "row 1" in found[(2, "patient_id")].expected
    assert found[(3, "died")].value == "2" and "['0', '1']" in found[(3, "died")].expected
    assert found[(4, "lactate")].value == "high" and "a number" in found[(4, "lactate")].expected
    assert "existing text file" in found[(5, "note_path")].expected
    assert "resolves outside" in found[(6, "note_path")].expected
    assert "absolute path" in found[(7, "cxr_path")].expected
    assert "resolves outside" in found[(8, "pcg_path")].expected
    assert "looks like a PNG image" in found[(9, "cxr_path")].expected
    assert "0 bytes" in found[(10, "pcg_path")].expected
    assert "at least one modality present" in found[(11, None)].expected
    assert "did you mean 'train'" in found[(12, "split")].expected
    assert "Time,Parameter,Value" in found[(13, "vitals_path")].expected
    for problem in report.problems:
        assert problem.file.endswith(("cohort.csv", "cohort.yaml"))


def test_missing_column_gets_a_suggestion_and_rows_are_still_checked(editable_cohort):
    _edit_spec(editable_cohort, lambda s: s["modalities"]["labs"]["numeric"].append("lactat"))
    _edit_table(editable_cohort, {(4, "sodium"): "n/a?"})
    report = validate_cohort(editable_cohort / "cohort.yaml")
    assert [(p.row, p.column) for p in report.problems] == [(None, "lactat"), (4, "sodium")]
    assert "did you mean 'lactate'" in report.problems[0].expected


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("name: x\ntable: [unclosed\n", None, "valid YAML"),
        ("- a list\n", None, "a YAML mapping"),
        (
            "name: x\ntable: t.csv\nid: id\nmodalities:\n  cxr: {kind: imgae, column: p}\n",
            "modalities.cxr.kind",
            "did you mean 'image'",
        ),
        (
            "name: x\ntable: t.csv\nmodalities:\n  cxr: {kind: image, column: p}\n",
            "id",
            "required key",
        ),
        (
            "name: x\nname: y\ntable: t.csv\nid: id\nmodalities: {c: {kind: image, column: p}}\n",
            "name",
            "once",
        ),
    ],
)
def test_spec_faults_name_the_line_and_key(tmp_path, text, column, expected):
    (tmp_path / "cohort.yaml").write_text(text)
    report = validate_cohort(tmp_path / "cohort.yaml")
    assert not report.ok
    problem = report.problems[0]
    assert problem.column == column
    assert expected in problem.expected
    assert problem.line is not None or column is None or column == "id"


def test_unreadable_table_is_reported(editable_cohort):
    (editable_cohort / "cohort.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    report = validate_cohort(editable_cohort / "cohort.yaml")
    assert [p.column for p in report.problems] == ["table"]
    assert "readable .csv table" in report.problems[0].expected


def test_parquet_table_validates_like_csv(editable_cohort):
    table = pd.read_csv(editable_cohort / "cohort.csv", dtype=str, keep_default_na=False)
    table["died"] = table["died"].astype(int)
    table.to_parquet(editable_cohort / "cohort.parquet")
    _edit_spec(editable_cohort, lambda s: s.update(table="cohort.parquet"))
    report = validate_cohort(editable_cohort / "cohort.yaml")
    assert report.ok, report.problems
    assert report.summary.rows == 31


def test_load_cohort_refuses_a_spec_with_problems(editable_cohort):
    _edit_spec(editable_cohort, lambda s: s.update(tabel="x.csv"))
    with pytest.raises(SpecError, match="did you mean 'table'"):
        load_cohort(editable_cohort / "cohort.yaml")


def test_records_resolve_paths_and_mark_missing(synth_cohort):
    cohort = load_cohort(synth_cohort / "cohort.yaml")
    records = list(cohort.records())
    assert [r.row for r in records] == list(range(1, 32))
    for record in records:
        for name, path in record.paths.items():
            assert path is None or (Path(path).is_file() and Path(path).is_relative_to(cohort.data_root)), (
                name
            )
        assert record.split in {"train", "val", "test"}
        assert record.outcome in {"0", "1"}


def _vitals_files(folder: Path) -> list[Path]:
    return sorted((folder / "vitals").glob("*.csv"))


def test_malformed_sensor_lines_are_counted_per_reason_and_the_cohort_stays_valid(editable_cohort):
    first, second = _vitals_files(editable_cohort)[:2]
    with first.open("a") as handle:
        handle.write("noon,70,97,80,15\n1.5,70,97,80,15,EXTRA\n")
    with second.open("a") as handle:
        handle.write("2.0,seventy,97,80,15\n")
    report = validate_cohort(editable_cohort / "cohort.yaml")
    assert report.ok, report.problems
    files = report.files
    ecg_headers = list((editable_cohort / "ecg").glob("*.hea"))
    assert files.read == len(_vitals_files(editable_cohort)) + len(ecg_headers)
    assert files.checked > files.read
    assert files.skipped == {
        "vitals": {
            "row whose time is blank or not a finite number": 1,
            "line with more fields than the header": 1,
            "cell that is not a number (read as unobserved)": 1,
        }
    }
    assert files.rows_with_skipped == {"vitals": 2}


def test_a_sensor_file_with_nothing_usable_is_a_problem_and_skip_headers_only_counts(editable_cohort):
    broken = _vitals_files(editable_cohort)[0]
    broken.write_text("time,HR,SpO2,MAP,RR\nnoon,70,97,80,15\n")
    report = validate_cohort(editable_cohort / "cohort.yaml")
    [problem] = report.problems
    assert problem.column == "vitals_path" and "none is usable" in problem.expected
    quick = validate_cohort(editable_cohort / "cohort.yaml", check_files=False)
    assert quick.ok and quick.files.read == 0 and quick.files.checked == report.files.checked
