"""``deepwe demo`` end to end."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


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
