"""``deepwe import``: each importer turns a small real source into a cohort the validator accepts.

Sources are subsets of ``../shared/data`` copied into ``tmp_path`` (copied, not linked: the validator
resolves links and refuses paths that leave the data root).
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.importers import IMPORTERS, import_dataset, importer_options, run_import


def _table(result) -> list[dict[str, str]]:
    with (result.spec_path.parent / "cohort.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _spec(result) -> dict:
    return yaml.safe_load(result.spec_path.read_text(encoding="utf-8"))


def _assert_valid(result, *, check_files: bool = True) -> None:
    report = validate_cohort(result.spec_path, check_files=check_files)
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.summary.rows == result.rows


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_every_importer_and_its_options():
    assert set(IMPORTERS) == {"physionet2012", "cinc2017", "medmnist", "iu-xray", "mimic-iv", "fhir", "omop"}
    assert importer_options("cinc2017") == {"task": "af", "sample_rate": 300.0, "duration_s": None}
    assert importer_options("medmnist") == {"limit_per_split": None}
    assert importer_options("physionet2012") == {}
    assert importer_options("mimic-iv") == {"task": None, "cxr": None}
    assert importer_options("fhir") == {"task": None}
    assert importer_options("omop") == {"task": None, "schema": None}


def test_unknown_importer_suggests_the_closest_name(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unknown importer 'iu_xray'.*did you mean 'iu-xray'\?"):
        run_import("iu_xray", tmp_path, tmp_path / "out")


def test_unknown_option_suggests_the_closest_name(tmp_path: Path):
    with pytest.raises(ValueError, match=r"no option 'limit_per_splt'.*did you mean 'limit_per_split'\?"):
        import_dataset("medmnist", tmp_path / "x.npz", tmp_path / "out", limit_per_splt=3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("physionet2012", "set-\\*/NNNNNN.txt"),
        ("cinc2017", "REFERENCE.csv"),
        ("medmnist", "_images and _labels"),
        ("iu-xray", "indiana_reports.csv"),
    ],
)
def test_missing_source_names_the_path_and_what_was_expected(tmp_path: Path, name: str, expected: str):
    absent = tmp_path / "absent"
    with pytest.raises(ValueError, match=rf"{absent}.*{expected}"):
        run_import(name, absent, tmp_path / "out")
    assert not (tmp_path / "out" / "cohort.yaml").exists()


# --- PhysioNet 2012 ------------------------------------------------------------------------------


def _outcomes_header(path: Path) -> str:
    return path.read_text(encoding="utf-8").splitlines()[0]


def _outcome_lines(path: Path) -> dict[str, str]:
    return {line.split(",")[0]: line for line in path.read_text(encoding="utf-8").splitlines()[1:]}


@pytest.fixture
def p12_src(shared_data: Path, tmp_path: Path) -> Path:
    """20 real records in two sets: 12 in set-a, 8 in set-b (their outcomes split to match).

    Outcomes-b.txt leaves out the last record of set-b and adds one record that has no file.
    The third record gets an ICUType line (the shared copy has none).
    """
    real = shared_data / "physionet2012"
    records = sorted((real / "set-a").glob("*.txt"))[:21]
    outcomes = _outcome_lines(real / "Outcomes-a.txt")
    header = _outcomes_header(real / "Outcomes-a.txt")
    src = tmp_path / "p12"
    for set_name, chosen, extra in (("a", records[:12], []), ("b", records[12:20], [records[20]])):
        (src / f"set-{set_name}").mkdir(parents=True)
        for path in chosen:
            shutil.copy(path, src / f"set-{set_name}" / path.name)
        labelled = [p.stem for p in chosen if set_name == "a" or p != chosen[-1]]
        lines = [header] + [outcomes[r] for r in [*labelled, *(p.stem for p in extra)]]
        (src / f"Outcomes-{set_name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    third = src / "set-a" / records[2].name
    lines = third.read_text(encoding="utf-8").splitlines()
    third.write_text("\n".join([*lines[:2], "00:00,ICUType,3", *lines[2:]]) + "\n", encoding="utf-8")
    return src


@pytest.mark.realdata
def test_physionet2012_cohort_is_valid_and_counts_match_the_source(p12_src: Path, tmp_path: Path):
    spec_path = run_import("physionet2012", p12_src, tmp_path / "run")
    assert spec_path == tmp_path / "run" / "cohort.yaml"
    result = import_dataset("physionet2012", p12_src, tmp_path / "out")
    assert result.spec_path.read_bytes() == spec_path.read_bytes()  # deterministic
    _assert_valid(result)
    # counted by hand from the two outcome files: labelled records that have a file
    files = {p.stem: p.parent.name for p in p12_src.glob("set-*/*.txt")}
    deaths = Counter()
    for table in p12_src.glob("Outcomes-*.txt"):
        for line in table.read_text(encoding="utf-8").splitlines()[1:]:
            fields = line.split(",")
            if fields[0] in files:
                deaths[fields[-1]] += 1
    assert result.rows == sum(deaths.values()) == 19
    assert result.outcome_counts == dict(deaths)
    assert result.skipped == {"record without an outcome": 1, "outcome without a record file": 1}
    rows = _table(result)
    assert [r["set"] for r in rows] == ["set-a"] * 12 + ["set-b"] * 7
    assert all(r["record_path"] == f"{files[r['RecordID']]}/{r['RecordID']}.txt" for r in rows)


@pytest.mark.realdata
def test_physionet2012_static_values_land_in_their_columns(p12_src: Path, tmp_path: Path):
    result = import_dataset("physionet2012", p12_src, tmp_path / "out")
    rows = {r["RecordID"]: r for r in _table(result)}
    static = ("Age", "Gender", "Height", "Weight", "ICUType", "age_band")
    # read off the files: 132539 has Height -1 and Weight -1 (unknown), 132548 repeats Age
    assert {k: rows["132539"][k] for k in static} == {
        "Age": "54", "Gender": "0", "Height": "", "Weight": "", "ICUType": "", "age_band": "50-64"
    }  # fmt: skip
    assert {k: rows["132540"][k] for k in static} == {
        "Age": "76", "Gender": "1", "Height": "175.3", "Weight": "76", "ICUType": "", "age_band": "65-79"
    }  # fmt: skip
    assert rows["132541"]["ICUType"] == "3"
    assert rows["132548"]["Age"] == "74"
    assert any("several different values" in note for note in result.notes)
    assert (rows["132540"]["SAPS-I"], rows["132540"]["SOFA"]) == ("16", "8")


@pytest.mark.realdata
def test_physionet2012_spec_has_series_channels_and_baselines_outside_modalities(
    p12_src: Path, tmp_path: Path
):
    result = import_dataset("physionet2012", p12_src, tmp_path / "out")
    spec = _spec(result)
    channels = spec["modalities"]["timeseries"]["channels"]
    assert channels == sorted(channels)
    assert {"HR", "GCS", "Weight", "pH"} <= set(channels)  # Weight is also charted after 00:00
    assert not {"Age", "Gender", "Height", "ICUType", "RecordID", "Parameter"} & set(channels)
    assert spec["modalities"]["static"] == {
        "kind": "tabular",
        "numeric": ["Age", "Height", "Weight"],
        "categorical": ["Gender", "ICUType"],
    }
    used = {
        c
        for m in spec["modalities"].values()
        for c in [m.get("column"), *m.get("numeric", []), *m.get("categorical", [])]
    }
    assert not {"SAPS-I", "SOFA", "age_band"} & used
    assert spec["subgroups"] == ["Gender", "age_band", "ICUType"]
    assert Path(spec["data_root"]) == p12_src.resolve()


@pytest.mark.realdata
def test_physionet2012_skips_and_counts_a_file_that_is_not_a_record(p12_src: Path, tmp_path: Path):
    broken = sorted((p12_src / "set-a").glob("*.txt"))[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a record")
    result = import_dataset("physionet2012", p12_src, tmp_path / "out")
    _assert_valid(result)
    assert result.rows == 18
    assert result.skipped == {
        "unreadable record file": 1,
        "record without an outcome": 1,
        "outcome without a record file": 1,
    }
    assert broken.stem not in {r["RecordID"] for r in _table(result)}


def test_physionet2012_refuses_a_folder_without_outcomes(tmp_path: Path):
    (tmp_path / "src" / "set-a").mkdir(parents=True)
    (tmp_path / "src" / "set-a" / "000001.txt").write_text("Time,Parameter,Value\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"src: expected .*found no Outcomes-\*\.txt"):
        import_dataset("physionet2012", tmp_path / "src", tmp_path / "out")


@pytest.mark.realdata
@pytest.mark.slow
def test_physionet2012_full_set_a_imports_quickly(shared_data: Path, tmp_path: Path):
    start = time.perf_counter()
    result = import_dataset("physionet2012", shared_data / "physionet2012", tmp_path / "out")
    _assert_valid(result, check_files=False)
    assert time.perf_counter() - start < 20
    assert result.rows == 3996
    assert result.outcome_counts == {"0": 3442, "1": 554}
    assert result.skipped == {"outcome without a record file": 4}
    assert len(_spec(result)["modalities"]["timeseries"]["channels"]) == 37


# --- CinC 2017 -----------------------------------------------------------------------------------


@pytest.fixture
def cinc_src(shared_data: Path, tmp_path: Path) -> Path:
    """Records of every class (8 N, 6 A, 3 O, 3 ~), REFERENCE.csv naming two records not copied,
    and one copied record that REFERENCE.csv leaves out."""
    real = shared_data / "cinc2017"
    reference = [line.split(",") for line in (real / "REFERENCE.csv").read_text().splitlines()]
    picked = []
    for label, n in (("N", 8), ("A", 6), ("O", 3), ("~", 3)):
        picked += [r for r in reference if r[1] == label][:n]
    absent = [r for r in reference if r[1] == "A"][6:8]
    unlabelled = [r for r in reference if r[1] == "N"][8]
    src = tmp_path / "cinc"
    src.mkdir()
    for record, _ in [*picked, unlabelled]:
        for suffix in (".hea", ".mat"):
            shutil.copy(real / f"{record}{suffix}", src / f"{record}{suffix}")
    rows = sorted([*picked, *absent])
    (src / "REFERENCE.csv").write_text("".join(f"{r},{label}\n" for r, label in rows))
    return src


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("task", "column", "counts"),
    [
        ("af", "af", {"0": 14, "1": 6}),
        ("four", "rhythm", {"A": 6, "N": 8, "O": 3, "~": 3}),
    ],
)
def test_cinc2017_cohort_is_valid_for_each_task(
    cinc_src: Path, tmp_path: Path, task: str, column: str, counts: dict
):
    result = import_dataset("cinc2017", cinc_src, tmp_path / task, task=task)
    _assert_valid(result)
    assert result.rows == 20
    assert result.outcome_counts == counts
    assert result.skipped == {
        "record in REFERENCE.csv absent on disk": 2,
        "record on disk without a label in REFERENCE.csv": 1,
    }
    spec = _spec(result)
    assert spec["outcome"]["column"] == column
    assert spec["modalities"]["ecg"]["channels"] == ["ECG"]  # the sig_name of every header
    assert spec["modalities"]["ecg"]["sample_rate"] == 300.0
    rows = _table(result)
    assert all(r["ecg_path"] == f"{r['record']}.hea" for r in rows)
    if task == "af":
        assert all(r["af"] == str(int(r["rhythm"] == "A")) for r in rows)
    else:
        assert spec["outcome"]["classes"] == ["N", "A", "O", "~"]


@pytest.mark.realdata
def test_cinc2017_rejects_an_unknown_task_and_a_bad_reference(cinc_src: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"task must be one of af, four.*did you mean 'four'\?"):
        import_dataset("cinc2017", cinc_src, tmp_path / "out", task="fuor")
    (cinc_src / "REFERENCE.csv").write_text("A00001,N\nA00002,X\n")
    with pytest.raises(ValueError, match=r"REFERENCE\.csv, line 2: expected a label in N, A, O, ~"):
        import_dataset("cinc2017", cinc_src, tmp_path / "out")


# --- MedMNIST ------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("file", ["breastmnist.npz", "pneumoniamnist.npz"])
def test_medmnist_pngs_equal_the_npz_pixels(shared_data: Path, tmp_path: Path, file: str):
    src = shared_data / "medmnist" / file
    result = import_dataset("medmnist", src, tmp_path / "out", limit_per_split=4)
    _assert_valid(result)
    arrays = np.load(src)
    rows = _table(result)
    assert [r["split"] for r in rows] == ["train"] * 4 + ["val"] * 4 + ["test"] * 4
    expected_labels = Counter()
    for row in rows:
        split, index = row["split"], int(row["image_id"].split("-")[1])
        with Image.open(result.spec_path.parent / row["image_path"]) as image:
            pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, arrays[f"{split}_images"][index])
        label = int(np.ravel(arrays[f"{split}_labels"][index])[0])
        assert row["label"] == str(label)
        expected_labels[str(label)] += 1
    assert result.outcome_counts == dict(expected_labels)
    assert _spec(result)["outcome"] == {
        "column": "label",
        "task": "binary",
        "positive": 1,
        "classes": [0, 1],
    }
    assert _spec(result)["split"]["column"] == "split"


def test_medmnist_is_deterministic_and_prints_nothing(tmp_path: Path, capsys):
    images = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    arrays = {f"{s}_images": images for s in ("train", "val", "test")}
    labels = {f"{s}_labels": np.array([[0], [2]], dtype=np.uint8) for s in ("train", "val", "test")}
    np.savez(tmp_path / "tiny.npz", **arrays, **labels, test_extra=np.zeros(1))
    first = import_dataset("medmnist", tmp_path / "tiny.npz", tmp_path / "a")
    second = import_dataset("medmnist", tmp_path / "tiny.npz", tmp_path / "b")
    assert capsys.readouterr() == ("", "")
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    assert first.rows == second.rows == 6
    # labels 0 and 2: a two-class file is binary with the larger label positive
    assert _spec(first)["outcome"]["classes"] == [0, 2]
    _assert_valid(first)


def test_medmnist_refuses_a_file_without_the_split_arrays(tmp_path: Path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz: expected .*missing train_labels, val_images"):
        import_dataset("medmnist", tmp_path / "bad.npz", tmp_path / "out")
    np.savez(
        tmp_path / "multi.npz",
        **{f"{s}_images": np.zeros((2, 4, 4), np.uint8) for s in ("train", "val", "test")},
        **{f"{s}_labels": np.zeros((2, 3), np.uint8) for s in ("train", "val", "test")},
    )
    with pytest.raises(ValueError, match=r"single-label"):
        import_dataset("medmnist", tmp_path / "multi.npz", tmp_path / "out")


# --- IU X-ray ------------------------------------------------------------------------------------


@pytest.fixture
def iu_src(shared_data: Path, tmp_path: Path) -> Path:
    """The first 30 reports and the next 3 with neither findings nor impression."""
    with (shared_data / "iu_xray_reports" / "indiana_reports.csv").open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        reports, columns = list(reader), reader.fieldnames
    empty = [r for r in reports[30:] if not r["findings"].strip() and not r["impression"].strip()]
    src = tmp_path / "iu"
    src.mkdir()
    with (src / "indiana_reports.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(reports[:30] + empty[:3])
    return src


@pytest.mark.realdata
def test_iu_xray_cohort_is_valid_and_counts_match_the_source(iu_src: Path, tmp_path: Path):
    result = import_dataset("iu-xray", iu_src, tmp_path / "out")
    _assert_valid(result)
    with (iu_src / "indiana_reports.csv").open(encoding="utf-8") as handle:
        reports = list(csv.DictReader(handle))
    kept = [r for r in reports if r["findings"].strip() or r["impression"].strip()]
    assert (
        result.rows
        == len(kept)
        == len(reports) - result.skipped["report with neither findings nor impression"]
    )
    normal = sum(r["Problems"] == "normal" for r in kept)
    assert result.outcome_counts == {"0": normal, "1": len(kept) - normal}
    spec = _spec(result)
    assert spec["modalities"] == {"report": {"kind": "text", "column": "note_path", "inline": False}}
    assert {"MeSH", "Problems"} <= set(_table(result)[0])


@pytest.mark.realdata
def test_iu_xray_note_holds_findings_then_impression(iu_src: Path, tmp_path: Path):
    result = import_dataset("iu-xray", iu_src / "indiana_reports.csv", tmp_path / "out")
    rows = {r["uid"]: r for r in _table(result)}
    note = (result.spec_path.parent / rows["2"]["note_path"]).read_text(encoding="utf-8")
    assert note == (
        "Findings: Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries. "
        "Clear lungs. Inferior XXXX XXXX XXXX.\n\nImpression: No acute pulmonary findings.\n"
    )
    assert rows["2"]["abnormal"] == "1" and rows["1"]["abnormal"] == "0"
    # uid 3 has an impression only
    assert (
        (result.spec_path.parent / "notes" / "3.txt")
        .read_text(encoding="utf-8")
        .startswith("Impression: No displaced rib fractures")
    )
