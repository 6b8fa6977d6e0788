"""The import task engine, on a small MIMIC-IV-layout folder written here: windows, leakage, flags.

The folder has the real MIMIC-IV table layout (the columns the importer reads, in the real order) with
three ICU stays of two subjects, so every value is known and planted ones can be traced.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
import yaml

from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.importers import import_dataset
from pipelines.sources.importers.task_engine import read_task

PATIENTS = [
    ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    ["1", "F", "60", "2150", "2011 - 2013", ""],
    ["2", "M", "80", "2160", "2011 - 2013", "2160-03-05"],
]
ADMISSIONS = [
    line.split(",")
    for line in """\
subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,\
discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag
1,11,2150-01-01 08:00:00,2150-01-09 12:00:00,,URGENT,P1,EMERGENCY ROOM,HOME,Medicare,ENGLISH,MARRIED,WHITE,,,0
1,12,2151-06-01 08:00:00,2151-06-04 12:00:00,,ELECTIVE,P1,PHYSICIAN REFERRAL,HOME,Medicare,ENGLISH,MARRIED,WHITE,,,0
2,21,2160-03-01 00:00:00,2160-03-05 10:00:00,2160-03-05 10:00:00,EW EMER.,P2,EMERGENCY ROOM,DIED,Medicaid,ENGLISH,\
SINGLE,BLACK,,,1""".splitlines()
]
ICUSTAYS = [
    ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"],
    ["1", "11", "101", "MICU", "MICU", "2150-01-01 10:00:00", "2150-01-04 10:00:00", "3"],
    ["1", "12", "102", "SICU", "SICU", "2151-06-01 10:00:00", "2151-06-02 10:00:00", "1"],
    ["2", "21", "201", "MICU", "MICU", "2160-03-01 02:00:00", "2160-03-05 10:00:00", "4.3"],
]


def _header(text: str) -> list[str]:
    return text.split(",")


LAB_HEADER = _header(
    "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,valuenum,"
    "valueuom,ref_range_lower,ref_range_upper,flag,priority,comments"
)
OUTPUT_HEADER = _header("subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom")
# The planted post-window lactate: a value no in-window event has.
PLANTED = "29.9"


def _lab(n: int, subject: str, time: str, itemid: str, value: str, unit: str) -> list[str]:
    return [str(n), subject, "", str(n), itemid, "", time, time, value, value, unit, "", "", "", "", ""]


LABEVENTS = [
    LAB_HEADER,
    _lab(1, "1", "2150-01-01 09:00:00", "50813", "1.1", "mmol/L"),  # before intime: outside the window
    _lab(2, "1", "2150-01-01 12:00:00", "50813", "1.5", "mmol/L"),  # 2 h in
    _lab(3, "1", "2150-01-02 09:30:00", "50813", "2.0", "mmol/L"),  # 23.5 h in: the latest in window
    _lab(4, "1", "2150-01-02 16:00:00", "50813", PLANTED, "mmol/L"),  # 30 h in: after the window
    _lab(5, "1", "2150-01-01 13:00:00", "50813", "99", "mmol/L"),  # implausible
    _lab(6, "1", "2150-01-01 14:00:00", "50813", "18", "mg/dL"),  # another unit
    _lab(7, "1", "2150-01-01 15:00:00", "50912", "", "mg/dL"),  # no number
    _lab(8, "1", "2150-01-01 15:00:00", "50912", "1.3", "mg/dL"),
    _lab(9, "1", "2151-06-01 11:00:00", "50813", "3.5", "mmol/L"),  # the second stay
    _lab(10, "2", "2160-03-01 03:00:00", "50912", "2.2", "mg/dL"),
    _lab(11, "2", "not a time", "50912", "2.4", "mg/dL"),  # unreadable time
]
OUTPUTEVENTS = [
    OUTPUT_HEADER,
    ["1", "11", "101", "7", "2150-01-01 11:00:00", "2150-01-01 11:05:00", "226559", "300", "ml"],
    ["2", "21", "201", "7", "2160-03-01 04:00:00", "2160-03-01 04:05:00", "226559", "120", "ml"],
]
TASK = {
    "name": "tiny-mortality",
    "source": "mimic-iv",
    "index": {"kind": "icu_stay"},
    "window": {"start_h": 0, "end_h": 24},
    "outcome": {"kind": "in_hospital_death", "column": "died"},
    "static": ["age", "gender"],
    "variables": [
        {"name": "Lactate", "codes": ["50813"], "range": [0.1, 30]},
        {"codes": ["50912"], "range": [0.05, 25]},
        {"name": "Urine", "codes": ["226559"], "to": ["sensor"], "unit": "ml"},
    ],
}


def _write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


@pytest.fixture
def tiny_mimic(tmp_path: Path) -> Path:
    """A three-stay folder in the MIMIC-IV layout (no chartevents, inputevents or notes)."""
    src = tmp_path / "mimic"
    _write(src / "hosp" / "patients.csv.gz", PATIENTS)
    _write(src / "hosp" / "admissions.csv.gz", ADMISSIONS)
    _write(src / "hosp" / "labevents.csv.gz", LABEVENTS)
    _write(src / "hosp" / "d_labitems.csv.gz", [["itemid", "label"], ["50912", "Creatinine"]])
    _write(src / "icu" / "icustays.csv.gz", ICUSTAYS)
    _write(src / "icu" / "outputevents.csv.gz", OUTPUTEVENTS)
    return src


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(TASK), encoding="utf-8")
    return path


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "cohort.csv").open(encoding="utf-8", newline="") as handle:
        return {row["stay_id"]: row for row in csv.DictReader(handle)}


def _series(out: Path, row: dict[str, str]) -> list[dict[str, str]]:
    with (out / row["series_path"]).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_post_window_value_stays_out_of_every_feature(tiny_mimic, task_file, tmp_path):
    out = tmp_path / "out"
    result = import_dataset("mimic-iv", tiny_mimic, out, task=task_file)
    rows = _rows(out)
    stay = rows["101"]
    assert stay["Lactate"] == "2"  # the last value before 24 h, not the planted one at 30 h
    series = _series(out, stay)
    assert [s["hours_since_index"] for s in series if s["Lactate"]] == ["2", "23.5"]
    texts = [p.read_text(encoding="utf-8") for p in out.rglob("*.csv")]
    assert not any(PLANTED in text for text in texts)
    assert result.skipped["event after a row's observation window (left out: no leakage)"] >= 1
    # The value before intime is outside the window too.
    assert not any(s["Lactate"] == "1.1" for s in series)


def test_flags_are_counted_and_flagged_values_left_out(tiny_mimic, task_file, tmp_path):
    out = tmp_path / "out"
    result = import_dataset("mimic-iv", tiny_mimic, out, task=task_file)
    assert result.skipped["implausible value (outside the variable's range)"] == 1
    assert result.skipped["value in another unit than its variable's"] == 1
    assert result.skipped["value without a number"] == 1
    assert result.skipped["event without a readable time (hosp/labevents)"] == 1
    series = _series(out, _rows(out)["101"])
    assert {s["Lactate"] for s in series} == {"1.5", "2", ""}
    with (out / "variables.csv").open(encoding="utf-8", newline="") as handle:
        catalogue = {row["variable"]: row for row in csv.DictReader(handle)}
    assert catalogue["Lactate"]["unit"] == "mmol/L"  # the most common unit, kept as a column
    assert catalogue["Lactate"]["kept"] == "3"  # 1.5 and 2.0 of stay 101, 3.5 of stay 102
    assert catalogue["Lactate"]["implausible value (outside the variable's range)"] == "1"
    assert catalogue["Urine"]["unit"] == "ml"


def test_rows_outcome_static_names_and_group(tiny_mimic, task_file, tmp_path):
    out = tmp_path / "out"
    result = import_dataset("mimic-iv", tiny_mimic, out, task=task_file)
    rows = _rows(out)
    assert result.rows == 3 and result.outcome_counts == {"0": 2, "1": 1}
    assert rows["201"]["died"] == "1" and rows["102"]["died"] == "0"
    assert rows["102"]["age"] == "61"  # anchor_age 60 in 2150, ICU admission in 2151
    assert rows["201"]["Creatinine"] == "2.2"  # unnamed variable: named from d_labitems
    assert rows["102"]["series_path"] == "series/102.csv"
    spec = yaml.safe_load(result.spec_path.read_text(encoding="utf-8"))
    assert spec["split"]["group"] == "subject_id"
    assert spec["modalities"]["series"]["channels"] == ["Lactate", "Creatinine", "Urine"]
    assert spec["modalities"]["latest"]["numeric"] == ["Lactate", "Creatinine"]
    assert any("chartevents.csv.gz is absent" in note for note in result.notes)
    report = validate_cohort(result.spec_path)
    assert report.ok, [str(p) for p in report.problems]
    assert report.summary.group_sizes["groups"] == 2


def test_a_window_ending_earlier_moves_the_latest_value(tiny_mimic, tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({**TASK, "window": {"start_h": 0, "end_h": 3}}), encoding="utf-8")
    import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=path)
    assert _rows(tmp_path / "out")["101"]["Lactate"] == "1.5"


def test_an_event_table_missing_a_column_is_named_and_the_rest_imported(tiny_mimic, task_file, tmp_path):
    header, *rows = OUTPUTEVENTS
    _write(
        tiny_mimic / "icu" / "outputevents.csv.gz",
        [[c for c in header if c != "valueuom"], *[r[:-1] for r in rows]],
    )
    result = import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=task_file)
    message = next(n for n in result.notes if "outputevents" in n)
    assert str(tiny_mimic / "icu" / "outputevents.csv.gz") in message and "valueuom" in message
    assert result.skipped["record of an event table with a missing column (icu/outputevents)"] == 2
    assert result.rows == 3
    assert _rows(tmp_path / "out")["101"]["Lactate"] == "2"


def test_a_core_table_missing_a_column_stops_with_file_and_column(tiny_mimic, task_file, tmp_path):
    header, *rows = ICUSTAYS
    _write(tiny_mimic / "icu" / "icustays.csv.gz", [header[:-3], *[r[:-3] for r in rows]])
    with pytest.raises(ValueError, match=r"icustays\.csv\.gz: expected the MIMIC-IV columns intime"):
        import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=task_file)


def test_task_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TASK, "window": {"start_h": 5, "end_h": 2}}), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}: expected a valid import task; window: .*must be after"):
        read_task(path)
    path.write_text(yaml.safe_dump({**TASK, "outcome": {"kind": "death", "codes": ["x"]}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"outcome: .*outcome.codes applies to kind 'condition'"):
        read_task(path)


def test_a_code_in_two_variables_is_refused(tiny_mimic, tmp_path):
    path = tmp_path / "twice.yaml"
    variables = [*TASK["variables"], {"name": "Lactate again", "codes": ["50813"]}]
    path.write_text(yaml.safe_dump({**TASK, "variables": variables}), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"code '50813' is listed by variables 'Lactate' and 'Lactate again'"
    ):
        import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=path)


def test_cxr_images_in_the_window_become_an_image_modality(tiny_mimic, task_file, tmp_path):
    """MIMIC-CXR-JPG layout: the latest in-window study per stay; a later one and an absent file stay out."""
    from PIL import Image

    cxr = tmp_path / "cxr"
    header = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]
    studies = [
        ["d-early", "1", "500", "PA", "21500101", "120000.000"],  # 2 h into stay 101
        ["d-in", "1", "501", "AP", "21500101", "203000.5"],  # 10.5 h in: the latest in window
        ["d-after", "1", "502", "AP", "21500103", "090000"],  # after the window
        ["d-absent", "2", "600", "AP", "21600301", "050000"],  # in window, but no file
    ]
    _write(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", [header, *studies])
    for dicom, subject, study, *_ in studies[:3]:
        path = cxr / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=128).save(path)
    out = tmp_path / "out"
    result = import_dataset("mimic-iv", tiny_mimic, out, task=task_file, cxr=cxr)
    rows = _rows(out)
    assert rows["101"]["image_path"] == "cxr/files/p1/p1/s501/d-in.jpg"
    assert rows["201"]["image_path"] == "" and rows["102"]["image_path"] == ""
    assert result.skipped["image listed in the source but absent on disk"] == 1
    assert result.skipped["image after a row's observation window (left out: no leakage)"] == 1
    spec = yaml.safe_load(result.spec_path.read_text(encoding="utf-8"))
    assert spec["modalities"]["image"] == {"kind": "image", "column": "image_path"}
    assert spec["data_root"] == str(tmp_path)
    assert rows["101"]["series_path"] == "out/series/101.csv"
    report = validate_cohort(result.spec_path)
    assert report.ok, [str(p) for p in report.problems]


def test_a_task_without_sensor_variables_writes_no_series(tiny_mimic, tmp_path):
    path = tmp_path / "tabular.yaml"
    variables = [{"name": "Lactate", "codes": ["50813"], "to": ["tabular"], "range": [0.1, 30]}]
    path.write_text(yaml.safe_dump({**TASK, "variables": variables}), encoding="utf-8")
    result = import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=path)
    spec = yaml.safe_load(result.spec_path.read_text(encoding="utf-8"))
    assert set(spec["modalities"]) == {"demographics", "latest"}
    assert _rows(tmp_path / "out")["101"]["Lactate"] == "2"
    assert validate_cohort(result.spec_path).ok


def test_a_truncated_core_table_is_a_clear_error(tiny_mimic, task_file, tmp_path):
    path = tiny_mimic / "icu" / "icustays.csv.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{tiny_mimic}: a table could not be read \("):
        import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=task_file)


def test_a_variable_named_like_another_column_is_refused(tiny_mimic, tmp_path):
    path = tmp_path / "clash.yaml"
    variables = [{"name": "age_band", "codes": ["50813"]}]
    path.write_text(yaml.safe_dump({**TASK, "variables": variables}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"variable name 'age_band' is already a column of the cohort"):
        import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=path)


@pytest.mark.slow
def test_an_event_table_truncated_deep_inside_is_skipped_and_the_rest_imported(
    tiny_mimic, task_file, tmp_path
):
    many = [_lab(100 + n, "1", "2150-01-05 00:00:00", "50912", "1.0", "mg/dL") for n in range(60_000)]
    path = tiny_mimic / "hosp" / "labevents.csv.gz"
    _write(path, [*LABEVENTS, *many])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    result = import_dataset("mimic-iv", tiny_mimic, tmp_path / "out", task=task_file)
    assert result.skipped["unreadable event table (hosp/labevents)"] == 1
    assert any(n.startswith("hosp/labevents: could not be read") for n in result.notes)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 3 and "Lactate" not in rows["101"]  # no lab survives from the broken table
    assert _series(tmp_path / "out", rows["101"])[0]["Urine"] == "300"  # outputevents still imported
