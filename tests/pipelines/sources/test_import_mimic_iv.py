"""``deepwe import mimic-iv`` on the real MIMIC-IV demo (100 patients, 140 ICU stays), then train."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cohorts.validate import validate_cohort
from pipelines.sources.importers import import_dataset
from tests.conftest import SHARED_DATA

runner = CliRunner()
# Stays whose admission has hospital_expire_flag = 1: 15 admissions of the demo, 20 ICU stays.
DEMO_STAYS, DEMO_DEATH_STAYS, DEMO_SUBJECTS = 140, 20, 100


@pytest.fixture(scope="module")
def demo_cohort(tmp_path_factory) -> Path:
    src = SHARED_DATA / "mimic-iv-demo-2.2"
    if not src.is_dir():
        pytest.skip(f"real data folder {src} is absent")
    out = tmp_path_factory.mktemp("mimic") / "cohort"
    return import_dataset("mimic-iv", src, out).spec_path


@pytest.mark.realdata
def test_demo_rows_deaths_and_groups_are_as_documented(demo_cohort):
    with (demo_cohort.parent / "cohort.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == DEMO_STAYS
    assert sum(r["hospital_death"] == "1" for r in rows) == DEMO_DEATH_STAYS
    assert len({r["subject_id"] for r in rows}) == DEMO_SUBJECTS
    assert all(r["series_path"] for r in rows)
    spec = yaml.safe_load(demo_cohort.read_text(encoding="utf-8"))
    assert spec["split"]["group"] == "subject_id"
    assert {"Lactate", "Creatinine", "Urine output", "Norepinephrine"} <= set(
        spec["modalities"]["series"]["channels"]
    )
    assert "Heart rate" not in spec["modalities"]["series"]["channels"]  # chartevents is absent


@pytest.mark.realdata
def test_demo_cohort_validates_with_file_headers_and_one_split_per_subject(demo_cohort):
    report = validate_cohort(demo_cohort)
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.summary.group_sizes["groups"] == DEMO_SUBJECTS
    splits: dict[str, set[str]] = {}
    for record in report.cohort.records():
        subject = report.cohort.table.at[record.row - 1, "subject_id"]
        splits.setdefault(subject, set()).add(record.split)
    assert all(len(s) == 1 for s in splits.values())


@pytest.mark.realdata
def test_cli_import_says_chartevents_is_absent_and_validates(tmp_path):
    src = SHARED_DATA / "mimic-iv-demo-2.2"
    if not src.is_dir():
        pytest.skip(f"real data folder {src} is absent")
    result = runner.invoke(app, ["import", "mimic-iv", str(src), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert f"wrote {DEMO_STAYS} rows" in result.output
    assert "chartevents.csv.gz is absent" in result.output
    assert "the cohort validates" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_deepwe_train_runs_end_to_end_on_the_demo_cohort(demo_cohort, tmp_path):
    config = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml").read_text())
    config.update(epochs=1, patience=1)
    (tmp_path / "one_epoch.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "train",
            str(demo_cohort),
            "--out",
            str(tmp_path / "model"),
            "--config",
            str(tmp_path / "one_epoch.yaml"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "weights.safetensors").is_file()
    assert "test: auroc" in result.output
