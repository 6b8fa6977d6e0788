"""``deepwe train`` and ``predict`` from the command line: outputs, refused bundles, the exit code of rows
that lose a modality."""

from __future__ import annotations

import shutil

import pandas as pd
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


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
