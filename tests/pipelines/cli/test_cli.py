from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


@pytest.mark.parametrize("command", ["validate", "synth", "demo", "import", "train", "predict", "export"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_validate_exit_codes_and_json(synth_cohort, editable_cohort, tmp_path):
    ok = runner.invoke(app, ["validate", str(synth_cohort / "cohort.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output and "31 rows" in ok.output

    (editable_cohort / "cohort.csv").write_text(
        (editable_cohort / "cohort.csv").read_text().replace(",train,", ",tran,", 1)
    )
    report_path = tmp_path / "report.json"
    bad = runner.invoke(app, ["validate", str(editable_cohort / "cohort.yaml"), "--json", str(report_path)])
    assert bad.exit_code == EXIT_BAD_INPUT
    assert "tran" in bad.output and "did you mean 'train'" in bad.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and report["problems"][0]["column"] == "split"


def test_synth_then_validate(tmp_path):
    out = tmp_path / "cohort"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "12", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 patients" in result.output
    assert runner.invoke(app, ["validate", str(out / "cohort.yaml")]).exit_code == 0


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    import pipelines.cli.demo as demo

    monkeypatch.setattr(demo, "DEMO_CONFIG", demo.DEMO_CONFIG.with_name("tiny.yaml"))
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--n", "40", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cohort" / "cohort.yaml").is_file()
    assert (tmp_path / "model" / "manifest.json").is_file()
    assert len(pd.read_parquet(tmp_path / "predictions.parquet")) == 40
    assert "valid cohort" in result.output and "40 rows" in result.output


def test_train_and_predict_commands(cohort_60, bundle_path, tmp_path):
    bad = runner.invoke(app, ["train", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "m")])
    assert bad.exit_code == EXIT_BAD_INPUT
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app, ["predict", str(bundle_path), str(cohort_60), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "60 rows" in result.output and "60 ok" in result.output
    assert len(pd.read_csv(out)) == 60
    tampered = tmp_path / "bundle"
    shutil.copytree(bundle_path, tampered)
    (tampered / "metrics.json").write_text("{}")
    refused = runner.invoke(app, ["predict", str(tampered), str(cohort_60), "--out", str(out)])
    assert refused.exit_code == EXIT_BAD_INPUT and "sha256 does not match" in refused.output


def test_import_medmnist_then_validate(shared_data, tmp_path):
    out = tmp_path / "pneumonia"
    result = runner.invoke(
        app,
        ["import", "medmnist", str(shared_data / "medmnist" / "pneumoniamnist.npz"), "--out", str(out),
         "--limit-per-split", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 15 rows" in result.output and "the cohort validates" in result.output
    assert runner.invoke(app, ["validate", str(out / "cohort.yaml")]).exit_code == 0


def test_import_unknown_dataset_is_bad_input(tmp_path):
    result = runner.invoke(app, ["import", "physionet2021", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "did you mean 'physionet2012'" in result.output


def test_predict_exits_1_when_too_many_rows_lose_a_modality(bundle_path, cohort_60, tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, folder)
    for path in sorted((folder / "vitals").glob("*.csv"))[:12]:
        path.write_text("time,HR,SpO2,MAP,RR\n10:45,,1.9\n")
    out = tmp_path / "p.csv"
    args = ["predict", str(bundle_path), str(folder / "cohort.yaml"), "--out", str(out), "--device", "cpu"]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "rows predicted without 'vitals'" in failed.output
    assert "more than --allow-missing-share 0.1" in failed.output
    assert len(pd.read_csv(out)) == 60  # the output is written all the same
    allowed = runner.invoke(app, [*args, "--allow-missing-share", "0.5"])
    assert allowed.exit_code == 0, allowed.output
