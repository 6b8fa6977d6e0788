"""``deepwe import fhir`` on the real Synthea FHIR R4 Bundles (70 patients in 72 files), then train."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.importers import import_dataset
from tests.conftest import SHARED_DATA

runner = CliRunner()
SRC = SHARED_DATA / "synthea-fhir-r4"
# 72 JSON files: 70 patient Bundles plus one of Organizations and one of Practitioners.
FILES, PATIENTS, DECEASED = 72, 70, 32


def _source() -> Path:
    if not SRC.is_dir():
        pytest.skip(f"real data folder {SRC} is absent")
    return SRC


@pytest.fixture(scope="module")
def fhir_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir") / "cohort"
    return import_dataset("fhir", _source(), out)


def _rows(spec_path: Path) -> list[dict[str, str]]:
    with (spec_path.parent / "cohort.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.realdata
def test_one_row_per_patient_and_the_deceased_count(fhir_cohort):
    rows = _rows(fhir_cohort.spec_path)
    assert len(rows) == PATIENTS and len({r["patient_id"] for r in rows}) == PATIENTS
    assert (
        f"{PATIENTS} Patients read from {FILES} files, {DECEASED} with deceasedDateTime" in fhir_cohort.notes
    )
    # Every deceased patient dies within a year of their last encounter before death.
    assert fhir_cohort.outcome_counts == {"0": PATIENTS - DECEASED, "1": DECEASED}
    spec = yaml.safe_load(fhir_cohort.spec_path.read_text(encoding="utf-8"))
    channels = spec["modalities"]["series"]["channels"]
    assert {"Systolic BP", "Diastolic BP", "Body weight"} <= set(channels)  # blood pressure components
    assert spec["modalities"]["demographics"]["categorical"] == [
        "gender",
        "race",
        "ethnicity",
        "marital_status",
    ]


@pytest.mark.realdata
def test_fhir_cohort_validates_with_file_headers(fhir_cohort):
    report = validate_cohort(fhir_cohort.spec_path)
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.summary.rows == PATIENTS


@pytest.fixture
def bad_source(tmp_path: Path) -> Path:
    """Three real Bundles, one with a valueless Observation, and a JSON file that is not FHIR."""
    files = sorted(p for p in _source().glob("*.json") if "Information" not in p.name)[:3]
    src = tmp_path / "fhir"
    src.mkdir()
    for path in files:
        shutil.copy(path, src / path.name)
    edited = src / files[0].name
    bundle = json.loads(edited.read_text(encoding="utf-8"))
    index, entry = next(
        (i, e)
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    )
    del entry["resource"]["valueQuantity"]
    edited.write_text(json.dumps(bundle), encoding="utf-8")
    (src / "export.json").write_text(json.dumps({"rows": [1, 2, 3]}), encoding="utf-8")
    return src, edited, index, entry["resource"]["id"]


@pytest.mark.realdata
def test_bad_resources_are_named_and_the_other_patients_imported(bad_source, tmp_path):
    src, edited, index, observation = bad_source
    result = import_dataset("fhir", src, tmp_path / "out")
    assert result.rows == 3
    assert result.skipped["file that is not a FHIR Bundle or resource"] == 1
    assert result.skipped["Observation skipped: expected a value[x] or valued components"] == 1
    notes = "\n".join(result.notes)
    assert f"{src / 'export.json'}: expected a FHIR resource (a JSON object with resourceType)" in notes
    assert f"{edited}, entry {index} (Observation '{observation}'): expected a value[x]" in notes
    assert validate_cohort(result.spec_path).ok


def test_a_folder_without_fhir_files_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match=r"expected a folder of FHIR R4 Bundles .* found no .json"):
        import_dataset("fhir", tmp_path / "src", tmp_path / "out")


def test_ndjson_resources_and_a_bad_line(tmp_path):
    """An NDJSON export: resources one per line; a broken line is counted and named, the rest kept."""
    src = tmp_path / "ndjson"
    src.mkdir()
    lines = [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-01"},
        {
            "resourceType": "Patient",
            "id": "p2",
            "gender": "male",
            "birthDate": "1940-05-01",
            "deceasedDateTime": "2020-03-01",
        },
        {
            "resourceType": "Encounter",
            "id": "e1",
            "subject": {"reference": "Patient/p1"},
            "class": {"code": "IMP"},
            "period": {"start": "2020-01-01T10:00:00Z"},
        },
        {
            "resourceType": "Encounter",
            "id": "e2",
            "subject": {"reference": "Patient/p2"},
            "class": {"code": "IMP"},
            "period": {"start": "2020-02-01T10:00:00+02:00"},
        },
        {
            "resourceType": "Observation",
            "id": "o1",
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2020-01-01T12:00:00Z",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 88, "unit": "/min"},
        },
        {
            "resourceType": "Observation",
            "id": "o2",
            "subject": {"reference": "Patient/p2"},
            "effectiveDateTime": "2020-02-01T09:00:00Z",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 120, "unit": "/min"},
        },
        {
            "resourceType": "Observation",
            "id": "o3",
            "subject": {"reference": "Patient/p2"},
            "effectiveDateTime": "2020-02-03T09:00:00Z",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 150, "unit": "/min"},
        },
    ]
    text = (
        "\n".join(json.dumps(line) for line in lines[:4])
        + "\n{not json\n"
        + "\n".join(json.dumps(line) for line in lines[4:])
    )
    (src / "export.ndjson").write_text(text + "\n", encoding="utf-8")
    result = import_dataset("fhir", src, tmp_path / "out")
    rows = {r["patient_id"]: r for r in _rows(result.spec_path)}
    assert rows["p1"]["Heart rate"] == "88" and rows["p1"]["died_365d"] == "0"
    assert rows["p2"]["Heart rate"] == "120"  # 08:00 UTC index; the value 2 days later is out
    assert rows["p2"]["died_365d"] == "1" and rows["p2"]["age"] == "79"
    assert result.skipped["file that is not a FHIR Bundle or resource"] == 1
    assert any(f"{src / 'export.ndjson'}, line 5: expected one FHIR resource" in n for n in result.notes)


@pytest.mark.realdata
@pytest.mark.slow
def test_deepwe_train_runs_end_to_end_on_the_fhir_cohort(fhir_cohort, tmp_path):
    config = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml").read_text())
    config.update(epochs=1, patience=1)
    (tmp_path / "one_epoch.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    arguments = ["train", str(fhir_cohort.spec_path), "--out", str(tmp_path / "model")]
    result = runner.invoke(app, [*arguments, "--config", str(tmp_path / "one_epoch.yaml"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "weights.safetensors").is_file()


def test_a_condition_outcome_and_one_row_per_encounter(tmp_path):
    """``outcome.kind: condition`` after the index time; ``which: each`` rows grouped by patient."""
    src = tmp_path / "fhir"
    src.mkdir()
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-01"}
    encounters = [
        {
            "resourceType": "Encounter",
            "id": encounter,
            "subject": {"reference": "urn:uuid:p1"},
            "class": {"code": "EMER"},
            "period": {"start": start},
        }
        for encounter, start in (("e1", "2020-01-01T10:00:00Z"), ("e2", "2021-06-01T10:00:00Z"))
    ]
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "urn:uuid:p1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        "onsetDateTime": "2020-03-01T00:00:00Z",  # 60 days after e1, before e2
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (patient, *encounters, condition)],
    }
    (src / "p1.json").write_text(json.dumps(bundle), encoding="utf-8")
    task = yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "pipelines/sources/importers/tasks/fhir.yaml").read_text()
    )
    task["index"] = {"kind": "encounter", "which": "each", "classes": ["EMER"]}
    task["outcome"] = {
        "kind": "condition",
        "codes": ["44054006"],
        "within_days": 90,
        "column": "diabetes_90d",
    }
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")
    result = import_dataset("fhir", src, tmp_path / "out", task=tmp_path / "task.yaml")
    rows = {r["encounter_id"]: r for r in _rows(result.spec_path)}
    assert {k: r["diabetes_90d"] for k, r in rows.items()} == {"e1": "1", "e2": "0"}
    assert {r["patient_id"] for r in rows.values()} == {"p1"}
    spec = yaml.safe_load(result.spec_path.read_text(encoding="utf-8"))
    assert spec["split"]["group"] == "patient_id"
