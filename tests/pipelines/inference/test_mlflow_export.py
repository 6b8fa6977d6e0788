"""`deepwe export mlflow`: a pickle-free pyfunc model that predicts what `deepwe predict` does, and serves
valid JSON."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.bundles.loading import load_bundle
from pipelines.cli import app
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import predict_cohort
from tests.processes import stop_process_group

mlflow = pytest.importorskip(
    "mlflow", reason="the mlflow extra is not installed (pip install 'deepwe-mm[mlflow]')"
)


@pytest.fixture(scope="module")
def exported(bundle_path, cohort_60, tmp_path_factory) -> Path:
    """The tiny bundle exported with the 60-patient cohort's folder as data root (read-only)."""
    out = tmp_path_factory.mktemp("mlflow") / "model"
    args = ["export", "mlflow", str(bundle_path), "--out", str(out), "--data-root", str(cohort_60.parent)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _rows(cohort_60: Path) -> pd.DataFrame:
    """The cohort's rows as a client holds them: numbers as numbers, blanks as NaN."""
    return pd.read_csv(cohort_60.parent / "cohort.csv")


def test_export_holds_no_pickle_and_the_verified_bundle(exported, bundle_path):
    files = [p for p in exported.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix.lower() in (".pkl", ".pickle")]
    assert (exported / "mlflow_model_code.py").is_file()
    copied = exported / "artifacts" / bundle_path.name
    assert load_bundle(copied).sha256 == load_bundle(bundle_path).sha256
    assert "signature" in (exported / "MLmodel").read_text()


def test_loaded_model_predicts_the_risks_of_deepwe_predict(exported, bundle_path, cohort_60, tmp_path):
    predict_cohort(load_bundle(bundle_path), cohort_60, tmp_path / "p.parquet", progress=False)
    expected = read_predictions(tmp_path / "p.parquet")
    model = mlflow.pyfunc.load_model(str(exported))
    got = model.predict(_rows(cohort_60))
    assert list(got["row"]) == list(range(1, 61))
    assert list(got["patient_id"]) == list(expected["patient_id"])
    assert list(got["risk"]) == list(expected["risk"])
    assert list(got["label"]) == list(expected["label"]) and list(got["status"]) == list(expected["status"])
    signature = model.metadata.get_output_schema().input_names()
    assert signature == list(got.columns)


def test_a_row_with_nothing_usable_is_an_error_row_with_null_risk(exported, cohort_60):
    rows = _rows(cohort_60).head(3).copy()
    rows.loc[1, [c for c in rows.columns if c != "patient_id"]] = None
    got = mlflow.pyfunc.load_model(str(exported)).predict(rows)
    assert list(got["status"]) == ["ok", "error", "ok"]
    assert got.loc[1, "risk"] is None and "no usable modality" in got.loc[1, "error"]


def test_a_missing_column_or_an_escaping_path_is_refused_naming_it(exported, cohort_60):
    model = mlflow.pyfunc.load_model(str(exported))
    with pytest.raises(Exception, match="ecg_path"):
        model.predict(_rows(cohort_60).drop(columns=["ecg_path"]))
    rows = _rows(cohort_60).head(3).copy()
    rows.loc[2, "cxr_path"] = "../../outside.dcm"
    with pytest.raises(Exception, match="row 3, column 'cxr_path'; expected a path inside"):
        model.predict(rows)


def test_export_refuses_an_existing_folder_and_an_altered_bundle(bundle_path, tmp_path):
    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.mkdir()
    result = runner.invoke(app, ["export", "mlflow", str(bundle_path), "--out", str(taken)])
    assert result.exit_code == 2 and "already exists" in result.output
    altered = tmp_path / "altered"
    shutil.copytree(bundle_path, altered)
    (altered / "metrics.json").write_text("{}\n")
    result = runner.invoke(app, ["export", "mlflow", str(altered), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "metrics.json" in result.output
    assert not (tmp_path / "out").exists()


def test_without_the_extra_export_says_how_to_install_it(bundle_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    monkeypatch.delitem(sys.modules, "pipelines.inference.mlflow_export", raising=False)
    result = CliRunner().invoke(app, ["export", "mlflow", str(bundle_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "pip install 'deepwe-mm[mlflow]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refuse_nan(token: str):
    raise ValueError(f"{token} is not valid JSON")


@pytest.mark.slow
def test_served_model_answers_invocations_with_valid_json(exported, cohort_60, tmp_path):
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(exported)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = (tmp_path / "serve.log").open("w")
    # mlflow starts `uvicorn` by name: the environment's scripts must come first on PATH, as when activated
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    server = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PATH": path},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "the server did not start within 180 s"
            time.sleep(1)
        rows = _rows(cohort_60).head(2).copy()
        rows.loc[1, [c for c in rows.columns if c != "patient_id"]] = None
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            body = answer.read().decode()
        predictions = json.loads(body, parse_constant=_refuse_nan)["predictions"]
        assert [p["status"] for p in predictions] == ["ok", "error"]
        assert 0 <= predictions[0]["risk"] <= 1 and predictions[1]["risk"] is None
    finally:
        stop_process_group(server, timeout=30)
        log.close()
