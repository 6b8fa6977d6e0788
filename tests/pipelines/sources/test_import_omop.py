"""``deepwe import omop`` on the real OMOP CDM 5.4 Synthea27Nj tables (28 persons, 1,791 visits)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.importers import import_dataset
from tests.conftest import SHARED_DATA

SRC = SHARED_DATA / "omop-synthea27nj-5.4"
PERSONS, VISITS, DEATHS = 28, 1791, 3
# Visits that start at most 365 days before their person's death (counted from DEATH and VISIT_OCCURRENCE).
VISITS_BEFORE_DEATH = 27
TABLES = ("PERSON", "VISIT_OCCURRENCE", "CONCEPT", "MEASUREMENT", "DEATH", "NOTE")


def _source() -> Path:
    if not SRC.is_dir():
        pytest.skip(f"real data folder {SRC} is absent")
    return SRC


@pytest.fixture(scope="module")
def omop_cohort(tmp_path_factory):
    return import_dataset("omop", _source(), tmp_path_factory.mktemp("omop") / "cohort")


def _rows(spec_path: Path) -> list[dict[str, str]]:
    with (spec_path.parent / "cohort.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.realdata
def test_visits_persons_and_deaths_are_as_documented(omop_cohort):
    rows = _rows(omop_cohort.spec_path)
    assert len(rows) == VISITS
    assert len({r["person_id"] for r in rows}) == PERSONS
    assert omop_cohort.outcome_counts == {"0": VISITS - VISITS_BEFORE_DEATH, "1": VISITS_BEFORE_DEATH}
    assert len({r["person_id"] for r in rows if r["died_365d"] == "1"}) == DEATHS
    assert f"{PERSONS} persons in PERSON" in omop_cohort.notes
    assert "NOTE.csv has no rows: no text modality" in omop_cohort.notes


@pytest.mark.realdata
def test_concepts_are_named_from_concept_csv_and_the_split_is_per_person(omop_cohort):
    spec = yaml.safe_load(omop_cohort.spec_path.read_text(encoding="utf-8"))
    assert spec["split"]["group"] == "person_id"
    latest = spec["modalities"]["latest"]["numeric"]
    assert {"Systolic blood pressure", "Heart rate", "Body weight"} <= set(latest)
    assert "Glucose [Mass/volume] in Blood" in spec["modalities"]["series"]["channels"]
    report = validate_cohort(omop_cohort.spec_path)
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.summary.group_sizes["groups"] == PERSONS
    by_person: dict[str, set[str]] = {}
    for record in report.cohort.records():
        by_person.setdefault(report.cohort.table.at[record.row - 1, "person_id"], set()).add(record.split)
    assert all(len(s) == 1 for s in by_person.values())


@pytest.mark.realdata
def test_an_unknown_concept_is_named_and_the_rest_imported(tmp_path):
    src = tmp_path / "omop"
    src.mkdir()
    for table in TABLES:
        shutil.copy(_source() / f"{table}.csv", src / f"{table}.csv")
    with (src / "MEASUREMENT.csv").open(encoding="utf-8", newline="") as handle:
        header, first, *_ = list(csv.reader(handle))
    planted = dict(zip(header, first, strict=True))
    planted.update(measurement_id="990001", measurement_concept_id="999999999", value_as_number="7")
    with (src / "MEASUREMENT.csv").open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerow([planted[c] for c in header])
    result = import_dataset("omop", src, tmp_path / "out")
    assert result.rows == VISITS
    assert result.skipped["record whose concept id is not in CONCEPT.csv (MEASUREMENT)"] == 1
    assert (
        f"{src / 'MEASUREMENT.csv'}, measurement_id 990001: expected a measurement_concept_id listed in "
        "CONCEPT.csv; 1 such record(s) skipped"
    ) in result.notes
    assert "OBSERVATION.csv is absent: its events are not imported" in result.notes
    assert validate_cohort(result.spec_path, check_files=False).ok


def test_a_folder_without_person_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match=r"expected an OMOP CDM 5.x folder .* PERSON.csv is absent"):
        import_dataset("omop", tmp_path / "src", tmp_path / "out")


def test_a_database_url_imports_like_the_folder(omop_cohort, tmp_path):
    import sqlite3

    import pandas as pd

    from pipelines.sources.importers.omop import TABLES

    database = tmp_path / "cdm.db"
    with sqlite3.connect(database) as connection:
        for table in TABLES:
            path = _source() / f"{table}.csv"
            if path.is_file():
                pd.read_csv(path, dtype=str).to_sql(table.lower(), connection, index=False)
    from_database = import_dataset("omop", f"sqlite:///{database}", tmp_path / "cohort")
    assert _rows(from_database.spec_path) == _rows(omop_cohort.spec_path)
    assert from_database.outcome_counts == omop_cohort.outcome_counts


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    with pytest.raises(ValueError, match=r"postgresql\+nosuchdriver://reader:\*\*\*@host/cdm"):
        import_dataset("omop", "postgresql+nosuchdriver://reader:secret@host/cdm", tmp_path / "out")
