"""The Ray engine on a local 2-CPU cluster: the local engine's output, its audit order, its resume and
its --max-errors, also when a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pipelines.bundles.loading import load_bundle
from pipelines.cli import app
from pipelines.inference.batching import PredictOptions
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import OutputWriteError, PredictAborted, predict_cohort

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepwe-mm[ray]')")

from pipelines.inference.ray_engine import RayEngine, RaySettings  # noqa: E402

# Two workers on two CPUs, leaving room for the driver (a whole CPU each starves Ray's own tasks).
SETTINGS = RaySettings(workers=2, cpus_per_worker=0.5)
WORKER_TITLE = b"ray::ChunkWorker"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Workers of 0.5 CPU run one torch thread; so does the local reference run, so that outputs compare
    bit for bit (another thread count sums float32 in another order: the last bit of a weight moves)."""
    torch.set_num_threads(1)  # the seeded autouse fixture of tests/conftest.py restores it


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module, stopped (every Ray process with it) at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def broken_cohort(cohort_60, tmp_path) -> Path:
    """A copy of the 60-patient cohort with a corrupt DICOM, an empty and an absent WAV, a lab that is
    not a number and a row with nothing usable."""
    folder = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, folder)
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    with_cxr = [i for i in range(len(table)) if table.loc[i, "cxr_path"]]
    with_pcg = [i for i in range(len(table)) if table.loc[i, "pcg_path"]]
    (folder / "cxr" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    (folder / "pcg" / "empty.wav").write_bytes(b"")
    table.loc[with_cxr[0], "cxr_path"] = "cxr/corrupt.dcm"
    table.loc[with_pcg[0], "pcg_path"] = "pcg/empty.wav"
    table.loc[with_pcg[1], "pcg_path"] = "pcg/gone.wav"
    table.loc[2, "lactate"] = "high"
    blank = ["age", "sex", "admission_type", "lactate", "creatinine", "sodium", "potassium", "bmi", "glucose"]
    table.loc[40, [*blank, "note_path", "cxr_path", "pcg_path", "vitals_path", "ecg_path"]] = ""
    table.to_csv(folder / "cohort.csv", index=False)
    return folder / "cohort.yaml"


def _run(bundle, spec, out, options, engine=None, **kwargs):
    records = []
    summary = predict_cohort(
        bundle,
        spec,
        out,
        options,
        progress=False,
        on_records=lambda chunk, batch: records.extend(chunk),
        engine=engine,
        **kwargs,
    )
    return summary, records


def _worker_pids() -> list[int]:
    """Processes of Ray workers of the engine (their title names the worker class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(WORKER_TITLE):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _no_workers_left(seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while _worker_pids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# Before any test that starts the module's cluster: these two need Ray stopped.
@pytest.mark.slow  # starts Ray
def test_too_many_cpus_for_a_local_cluster_is_refused_in_one_line(bundle, cohort_60, tmp_path):
    assert not ray.is_initialized()
    engine = RayEngine(RaySettings(workers=3, cpus_per_worker=float(os.cpu_count())))
    with pytest.raises(ValueError, match="lower --workers or --cpus-per-worker"):
        predict_cohort(bundle, cohort_60, tmp_path / "p.parquet", progress=False, engine=engine)
    assert not ray.is_initialized(), "the local cluster started for the run must be stopped"


def test_engine_ray_refuses_an_altered_bundle_before_starting_ray(bundle_path, cohort_60, tmp_path):
    altered = tmp_path / "model"
    shutil.copytree(bundle_path, altered)
    (altered / "calibration.json").write_text('{"temperature": 0.5}\n')
    args = ["predict", str(altered), str(cohort_60), "--out", str(tmp_path / "p.parquet"), "--engine", "ray"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "calibration.json" in result.output and "sha256" in result.output
    assert not ray.is_initialized()


@pytest.mark.slow  # starts Ray
def test_ray_output_and_audit_records_equal_the_local_engine(cluster, bundle, broken_cohort, tmp_path):
    options = PredictOptions(chunk_size=7, batch_size=5)
    local, local_records = _run(bundle, broken_cohort, tmp_path / "local.parquet", options)
    remote, ray_records = _run(bundle, broken_cohort, tmp_path / "ray.parquet", options, RayEngine(SETTINGS))
    expected = read_predictions(tmp_path / "local.parquet")
    pd.testing.assert_frame_equal(read_predictions(tmp_path / "ray.parquet"), expected)
    assert list(expected["row"]) == list(range(1, 61))
    # the broken files fail their modality (and the blank row its own row), not the job
    assert remote.errors == local.errors == 1 and expected.loc[40, "status"] == "error"
    reasons = " ".join(expected["modality_errors"])
    assert all(reason in reasons for reason in ('"cxr"', '"pcg"', "'lactate' is not a number"))
    assert [r.model_dump() for r in ray_records] == [r.model_dump() for r in local_records]
    assert not (tmp_path / "ray.parquet.partial").exists()
    assert _no_workers_left(), "the Ray workers outlived the run"


@pytest.mark.slow  # starts Ray
def test_a_worker_killed_mid_run_is_restarted_and_nothing_is_lost(cluster, bundle, cohort_60, tmp_path):
    options = PredictOptions(chunk_size=5, batch_size=5)
    predict_cohort(bundle, cohort_60, tmp_path / "local.parquet", options, progress=False)
    killed = []

    def kill_a_worker(records, batch):
        if not killed:
            pid = _worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = predict_cohort(
        bundle,
        cohort_60,
        tmp_path / "ray.parquet",
        options,
        progress=False,
        on_records=kill_a_worker,
        engine=RayEngine(SETTINGS),
    )
    assert killed and summary.rows == 60
    pd.testing.assert_frame_equal(
        read_predictions(tmp_path / "ray.parquet"), read_predictions(tmp_path / "local.parquet")
    )


@pytest.mark.slow  # starts Ray
def test_a_fault_mid_run_then_resume_loses_and_repeats_no_row(cluster, bundle, broken_cohort, tmp_path):
    options = PredictOptions(chunk_size=6, batch_size=4)
    _run(bundle, broken_cohort, tmp_path / "local.parquet", options)
    out, audited = tmp_path / "ray.parquet", []

    def fail_at_the_fourth_chunk(records, batch):
        if len(audited) == 18:
            raise OSError("the audit disk is full")
        audited.extend(records)

    with pytest.raises(OutputWriteError, match="audit disk"):
        predict_cohort(
            bundle,
            broken_cohort,
            out,
            options,
            progress=False,
            on_records=fail_at_the_fourth_chunk,
            engine=RayEngine(SETTINGS),
        )
    assert not out.exists()
    partial = tmp_path / "ray.parquet.partial"
    taken = sorted(p.name for p in partial.glob("chunk-*.taken"))
    assert taken == ["chunk-000000.taken", "chunk-000001.taken", "chunk-000002.taken"]
    assert (partial / "chunk-000003.parquet").is_file(), "a finished chunk is kept, taken or not"
    assert _no_workers_left(), "the Ray workers outlived the stopped run"
    summary, resumed = _run(bundle, broken_cohort, out, options, RayEngine(SETTINGS), resume=True)
    assert summary.resumed_chunks >= 4
    assert [r.row for r in audited + resumed] == list(range(1, 61))
    pd.testing.assert_frame_equal(read_predictions(out), read_predictions(tmp_path / "local.parquet"))


@pytest.mark.slow  # starts Ray
def test_max_errors_aborts_cleanly_and_resumes_with_a_higher_limit(cluster, bundle, cohort_60, tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, folder)
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    table.loc[:38, "pcg_path"] = "pcg/gone.wav"
    table.to_csv(folder / "cohort.csv", index=False)
    spec, out = folder / "cohort.yaml", tmp_path / "ray.parquet"
    strict = PredictOptions(on_bad_file="error", max_errors=3, chunk_size=10)
    audited = []
    with pytest.raises(PredictAborted, match="exceed --max-errors 3"):
        predict_cohort(
            bundle,
            spec,
            out,
            strict,
            progress=False,
            on_records=lambda chunk, batch: audited.extend(chunk),
            engine=RayEngine(SETTINGS),
        )
    assert not out.exists() and [r.row for r in audited] == list(range(1, 11))
    assert [p.name for p in (tmp_path / "ray.parquet.partial").glob("chunk-*.taken")] == [
        "chunk-000000.taken"
    ]
    assert _no_workers_left(), "the Ray workers outlived the aborted run"
    lenient = PredictOptions(on_bad_file="error", chunk_size=10)
    summary, resumed = _run(bundle, spec, out, lenient, RayEngine(SETTINGS), resume=True)
    assert summary.resumed_chunks >= 1 and summary.rows == 60 and summary.errors == 39
    assert [r.row for r in audited + resumed] == list(range(1, 61))
    _run(bundle, spec, tmp_path / "local.parquet", lenient)
    pd.testing.assert_frame_equal(read_predictions(out), read_predictions(tmp_path / "local.parquet"))


@pytest.mark.slow  # starts Ray
def test_cli_engine_ray_writes_the_local_output_and_audit_log(cluster, bundle_path, cohort_60, tmp_path):
    runner = CliRunner()
    outputs = {}
    for engine in ("local", "ray"):
        out, log = tmp_path / f"{engine}.csv", tmp_path / f"{engine}.jsonl"
        args = ["predict", str(bundle_path), str(cohort_60), "--out", str(out), "--audit-log", str(log)]
        args += ["--engine", engine, "--chunk-size", "16", "--device", "cpu"]
        if engine == "ray":
            args += ["--workers", "2", "--cpus-per-worker", "0.5"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "60 rows" in result.output
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        outputs[engine] = (read_predictions(out), [e["output"] for e in entries])
        verified = runner.invoke(app, ["audit", "verify", str(log)])
        assert verified.exit_code == 0 and "60 records" in verified.output
    pd.testing.assert_frame_equal(outputs["ray"][0], outputs["local"][0])
    assert outputs["ray"][1] == outputs["local"][1]


def test_without_the_extra_engine_ray_says_how_to_install_it(bundle_path, cohort_60, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    monkeypatch.delitem(sys.modules, "pipelines.inference.ray_engine", raising=False)
    args = ["predict", str(bundle_path), str(cohort_60), "--out", str(tmp_path / "p.parquet")]
    result = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'deepwe-mm[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.parquet").exists()


def _ray_processes_of_session(driver_pid: int) -> list[int]:
    """Processes of the local Ray cluster that the driver ``driver_pid`` started (by its session name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"/ray/session_" in command and f"_{driver_pid}".encode() in command:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_driver_killed_then_resume_audits_every_row_once(bundle_path, cohort_60, tmp_path):
    out, log = tmp_path / "ray.parquet", tmp_path / "audit.jsonl"
    command = [sys.executable, "-m", "pipelines.cli", "predict", str(bundle_path), str(cohort_60), "--out", str(out),
               "--chunk-size", "4", "--engine", "ray", "--workers", "2", "--cpus-per-worker", "0.5",
               "--audit-log", str(log)]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "ray.parquet.partial"
    try:
        deadline = time.monotonic() + 300
        while len(list(partial.glob("chunk-*.taken"))) < 3 and driver.poll() is None:
            assert time.monotonic() < deadline, "no chunk was taken within 300 s"
            time.sleep(0.05)
        assert driver.poll() is None, "the run finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        time.sleep(2)
        for pid in _ray_processes_of_session(driver.pid):  # Ray's agents can outlive a killed driver
            os.kill(pid, signal.SIGKILL)
    assert not out.exists()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "chunks resumed" in resumed.stdout
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["output"]["row"] for e in entries] == list(range(1, 61))
    predict_cohort(
        load_bundle(bundle_path),
        cohort_60,
        tmp_path / "local.parquet",
        PredictOptions(chunk_size=4),
        progress=False,
    )
    pd.testing.assert_frame_equal(read_predictions(out), read_predictions(tmp_path / "local.parquet"))
