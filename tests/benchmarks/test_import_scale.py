"""The import scale benchmark: its replica is the demo k times over, as distinct patients and stays."""

from __future__ import annotations

import csv
import gzip

import pytest

from benchmarks.import_scale import scale_up
from pipelines.sources.importers import import_dataset
from tests.conftest import SHARED_DATA

DEMO = SHARED_DATA / "mimic-iv-demo-2.2"


def _column(path, name: str) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return [row[name] for row in csv.DictReader(handle)]


@pytest.mark.realdata
def test_a_replica_is_the_demo_twice_over_and_imports_twice_the_stays(tmp_path):
    if not DEMO.is_dir():
        pytest.skip(f"real data folder {DEMO} is absent")
    scaled = scale_up(DEMO, tmp_path / "x2", 2)
    stays = _column(scaled / "icu" / "icustays.csv.gz", "stay_id")
    assert len(stays) == len(set(stays)) == 280
    assert len(_column(scaled / "hosp" / "patients.csv.gz", "subject_id")) == 200
    assert len(_column(scaled / "hosp" / "d_labitems.csv.gz", "itemid")) == len(
        _column(DEMO / "hosp" / "d_labitems.csv.gz", "itemid")
    )
    result = import_dataset("mimic-iv", scaled, tmp_path / "cohort")
    assert result.rows == 280
    assert result.outcome_counts == {"0": 240, "1": 40}
