"""``deepwe validate``, ``synth`` and ``import``: exit codes, the JSON report, the cohorts they write."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


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
