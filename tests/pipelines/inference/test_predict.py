"""Batch prediction that never loses a row: bad files, resume after kill -9, shards, batch sizes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipelines.cohorts.spec_io import SpecError
from pipelines.inference.batching import PredictOptions
from pipelines.inference.output_table import read_predictions, row_to_record
from pipelines.inference.predict import PredictAborted, predict_cohort
from pipelines.inference.shards import merge_shards, parse_shard

STABLE = ["row", "patient_id", "status", "error", "risk", "label", "probabilities", "modality_present"]


def _edit_table(folder: Path, edits: dict[tuple[int, str], str]) -> None:
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    for (row, column), value in edits.items():
        table.loc[row - 1, column] = value
    table.to_csv(folder / "cohort.csv", index=False)


def test_one_row_per_input_row_in_order(bundle, cohort_60, tmp_path):
    summary = predict_cohort(
        bundle, cohort_60, tmp_path / "p.parquet", PredictOptions(chunk_size=16), progress=False
    )
    frame = read_predictions(tmp_path / "p.parquet")
    table = pd.read_csv(cohort_60.parent / "cohort.csv", dtype=str)
    assert list(frame["row"]) == list(range(1, 61))
    assert list(frame["patient_id"]) == list(table["patient_id"])
    assert summary.rows == 60 and summary.ok == 60 and summary.errors == 0
    assert frame["risk"].between(0, 1).all()
    assert set(frame["label"]) <= {"0", "1"}
    first = row_to_record(frame.iloc[0].to_dict())
    assert abs(sum(first.modality_weights.values()) - 1) < 1e-4
    assert all(first.modality_weights[m] == 0 for m, p in first.modality_present.items() if not p)
    assert len(first.top_features) == 5 and len(first.neighbours) == 3
    assert first.model_sha256 == bundle.sha256 and len(first.input_sha256) == 64
    assert not (tmp_path / "p.parquet.partial").exists()


def test_training_patients_are_in_distribution(bundle, cohort_60, tmp_path):
    predict_cohort(bundle, cohort_60, tmp_path / "p.parquet", progress=False)
    frame = read_predictions(tmp_path / "p.parquet")
    # the reference cohort is the training split: its own members sit at distance 0
    assert (frame["ood_score"] < 0.99).mean() > 0.7


@pytest.mark.slow  # DataLoader worker processes
def test_predictions_identical_across_batch_sizes_and_workers(bundle, cohort_60, tmp_path):
    outputs = []
    for batch_size, workers in ((1, 0), (7, 2), (64, 0)):
        out = tmp_path / f"p{batch_size}.parquet"
        options = PredictOptions(batch_size=batch_size, num_workers=workers)
        predict_cohort(bundle, cohort_60, out, options, progress=False)
        outputs.append(read_predictions(out))
    for other in outputs[1:]:
        assert (outputs[0]["risk"] - other["risk"]).abs().max() < 1e-5
        assert list(outputs[0]["label"]) == list(other["label"])


@pytest.mark.parametrize("mode", ["missing", "error"])
def test_bad_files_fail_their_modality_not_the_job(bundle, cohort_copy, tmp_path, mode):
    table = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    rows_with_cxr = [i + 1 for i in range(len(table)) if table.loc[i, "cxr_path"]][:2]
    rows_with_pcg = [i + 1 for i in range(len(table)) if table.loc[i, "pcg_path"]][:2]
    (cohort_copy / "cxr" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    Image.new("L", (20000, 20000)).save(cohort_copy / "cxr" / "huge.png", optimize=True)
    (cohort_copy / "pcg" / "empty.wav").write_bytes(b"")
    _edit_table(
        cohort_copy,
        {
            (rows_with_cxr[0], "cxr_path"): "cxr/corrupt.dcm",
            (rows_with_cxr[1], "cxr_path"): "cxr/huge.png",
            (rows_with_pcg[0], "pcg_path"): "pcg/empty.wav",
            (rows_with_pcg[1], "pcg_path"): "pcg/gone.wav",
        },
    )
    out = tmp_path / "p.csv"
    summary = predict_cohort(
        bundle, cohort_copy / "cohort.yaml", out, PredictOptions(on_bad_file=mode), progress=False
    )
    frame = read_predictions(out)
    assert len(frame) == 60 and summary.rows == 60
    bad = {rows_with_cxr[0]: "cxr", rows_with_cxr[1]: "cxr", rows_with_pcg[0]: "pcg", rows_with_pcg[1]: "pcg"}
    for row, modality in bad.items():
        record = row_to_record(frame.iloc[row - 1].to_dict())
        if mode == "missing":
            assert record.status == "ok", record.error
            assert modality in record.modality_errors and not record.modality_present[modality]
        else:
            assert record.status == "error" and modality in record.error
        text = json.dumps(record.model_dump(mode="json"))
        assert "SYN-" not in (record.error or "") and "corrupt.dcm" not in text and "huge.png" not in text
    assert summary.errors == (4 if mode == "error" else 0)


def test_a_row_with_nothing_usable_is_an_error_row(bundle, cohort_copy, tmp_path):
    every = ["age", "sex", "admission_type", "lactate", "creatinine", "sodium", "potassium", "bmi", "glucose"]
    files = ["note_path", "cxr_path", "pcg_path", "vitals_path", "ecg_path"]
    _edit_table(cohort_copy, {(5, c): "" for c in every + files})
    summary = predict_cohort(bundle, cohort_copy / "cohort.yaml", tmp_path / "p.parquet", progress=False)
    frame = read_predictions(tmp_path / "p.parquet")
    assert frame.loc[4, "status"] == "error" and "no usable modality" in frame.loc[4, "error"]
    assert summary.errors == 1 and summary.error_reasons == {"no usable modality": 1}


def test_non_numeric_lab_is_missing_with_a_reason(bundle, cohort_copy, tmp_path):
    _edit_table(cohort_copy, {(3, "lactate"): "high"})
    predict_cohort(bundle, cohort_copy / "cohort.yaml", tmp_path / "p.parquet", progress=False)
    record = row_to_record(read_predictions(tmp_path / "p.parquet").iloc[2].to_dict())
    assert record.status == "ok" and "'lactate' is not a number" in record.modality_errors["labs"]
    assert "high" not in json.dumps(record.model_dump(mode="json"))


def test_max_errors_aborts_cleanly_and_keeps_finished_chunks(bundle, cohort_copy, tmp_path):
    _edit_table(cohort_copy, {(r, "pcg_path"): "pcg/gone.wav" for r in range(1, 40)})
    out = tmp_path / "p.parquet"
    options = PredictOptions(on_bad_file="error", max_errors=3, chunk_size=10)
    with pytest.raises(PredictAborted, match="exceed --max-errors 3"):
        predict_cohort(bundle, cohort_copy / "cohort.yaml", out, options, progress=False)
    assert not out.exists()
    assert list((tmp_path / "p.parquet.partial").glob("chunk-*.parquet"))


def test_duplicate_ids_are_refused_up_front(bundle, cohort_copy, tmp_path):
    table = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    _edit_table(cohort_copy, {(9, "patient_id"): table.loc[0, "patient_id"]})
    with pytest.raises(SpecError) as caught:
        predict_cohort(bundle, cohort_copy / "cohort.yaml", tmp_path / "p.parquet", progress=False)
    assert [(p.row, p.column) for p in caught.value.problems] == [(9, "patient_id")]
    assert not (tmp_path / "p.parquet").exists()


def test_shards_are_disjoint_and_their_union_is_the_full_run(bundle, cohort_60, tmp_path):
    full = tmp_path / "full.parquet"
    predict_cohort(bundle, cohort_60, full, progress=False)
    shards = []
    for i in range(3):
        path = tmp_path / f"shard{i}.parquet"
        predict_cohort(bundle, cohort_60, path, PredictOptions(shard=(i, 3)), progress=False)
        shards.append(path)
    rows = [set(read_predictions(p)["row"]) for p in shards]
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])
    merged = tmp_path / "merged.parquet"
    assert merge_shards(shards, merged) == 60
    pd.testing.assert_frame_equal(read_predictions(merged)[STABLE], read_predictions(full)[STABLE])
    with pytest.raises(ValueError, match="gaps"):
        merge_shards(shards[:2], tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("3")


def test_deepwe_merge_joins_shards_and_predict_merge_still_does_with_a_notice(bundle, cohort_60, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import EXIT_BAD_INPUT, app

    shards = []
    for i in range(2):
        path = tmp_path / f"shard{i}.parquet"
        predict_cohort(bundle, cohort_60, path, PredictOptions(shard=(i, 2)), progress=False)
        shards.append(str(path))
    runner = CliRunner()
    merged = tmp_path / "merged.parquet"
    result = runner.invoke(app, ["merge", *shards, "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert "merged 2 shard outputs (60 rows)" in result.stdout
    assert "predict --merge" not in result.stderr
    old_way = tmp_path / "old.parquet"
    result = runner.invoke(
        app, ["predict", "--merge", shards[0], "--merge", shards[1], "--out", str(old_way)]
    )
    assert result.exit_code == 0, result.output
    assert "use `deepwe merge" in result.stderr and "deepwe merge" not in result.stdout
    pd.testing.assert_frame_equal(read_predictions(old_way), read_predictions(merged))
    assert list(read_predictions(merged)["row"]) == list(range(1, 61))
    result = runner.invoke(app, ["merge", shards[0], "--out", str(tmp_path / "gap.parquet")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "gaps" in result.stderr and not (tmp_path / "gap.parquet").exists()


def test_resume_with_other_options_is_refused(bundle, cohort_copy, tmp_path):
    _edit_table(cohort_copy, {(r, "pcg_path"): "pcg/gone.wav" for r in range(1, 40)})
    out = tmp_path / "p.parquet"
    with pytest.raises(PredictAborted):
        predict_cohort(
            bundle, cohort_copy / "cohort.yaml", out, PredictOptions(on_bad_file="error", max_errors=1, chunk_size=10),
            progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="another model, cohort or options"):
        predict_cohort(
            bundle,
            cohort_copy / "cohort.yaml",
            out,
            PredictOptions(chunk_size=10),
            resume=True,
            progress=False,
        )


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_output(bundle_path, cohort_60, tmp_path):
    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", "predict", str(bundle_path), str(cohort_60), "--out", str(out),
                "--chunk-size", "6", "--batch-size", "3", "--device", "cpu", "--workers", "1", *extra]  # fmt: skip

    straight = tmp_path / "straight.parquet"
    subprocess.run(command(straight), check=True, capture_output=True)
    killed = tmp_path / "killed.parquet"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "killed.parquet.partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(partial.glob("chunk-*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "prediction finished before it could be killed"
    workers = _children(process.pid)
    assert workers, "the run reads files in a worker process"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a reading worker outlived its killed run"
    assert not killed.exists(), "a killed run must leave no output file"
    done = len(list(partial.glob("chunk-*.parquet")))
    assert 2 <= done < 10
    result = subprocess.run(command(killed, "--resume"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "chunks resumed" in result.stdout
    pd.testing.assert_frame_equal(read_predictions(killed), read_predictions(straight))


def test_audit_log_records_every_prediction_and_replays(bundle_path, cohort_60, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "p.parquet"
    args = [
        "predict",
        str(bundle_path),
        str(cohort_60),
        "--out",
        str(out),
        "--audit-log",
        str(log),
        "--device",
        "cpu",
    ]
    assert runner.invoke(app, args).exit_code == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 60
    verified = runner.invoke(app, ["audit", "verify", str(log)])
    assert verified.exit_code == 0 and "60 records" in verified.output
    replay = [
        "audit",
        "replay",
        str(log),
        "--sequence",
        "7",
        "--model",
        str(bundle_path),
        "--spec",
        str(cohort_60),
    ]
    replayed = runner.invoke(app, replay)
    assert replayed.exit_code == 0, replayed.output
    assert "reproduced" in replayed.output
    edited = json.loads(lines[4])
    edited["output"]["risk"] = 0.999
    lines[4] = json.dumps(edited)
    log.write_text("\n".join(lines) + "\n")
    broken = runner.invoke(app, ["audit", "verify", str(log)])
    assert broken.exit_code == 1 and "line 5" in broken.output


def _rows_with(folder: Path, column: str) -> list[int]:
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    return [i + 1 for i, cell in enumerate(table[column]) if cell]


def test_skipped_sensor_lines_and_failed_files_are_counted_per_modality_and_reason(
    bundle, cohort_copy, tmp_path
):
    rows = _rows_with(cohort_copy, "vitals_path")
    table = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    skipped_row, *failed_rows = rows[:4]
    with (cohort_copy / table.loc[skipped_row - 1, "vitals_path"]).open("a") as handle:
        handle.write("noon,70,97,80,15\n")
    for row in failed_rows:
        (cohort_copy / table.loc[row - 1, "vitals_path"]).write_text("time,HR,SpO2,MAP,RR\n,1,2,3,4\n")
    out = tmp_path / "p.parquet"
    summary = predict_cohort(bundle, cohort_copy / "cohort.yaml", out, progress=False)
    frame = read_predictions(out)
    assert len(frame) == 60 and summary.ok == 60
    record = row_to_record(frame.iloc[skipped_row - 1].to_dict())
    assert record.skipped_lines == {"vitals": {"row whose time is blank or not a finite number": 1}}
    assert record.modality_present["vitals"]
    assert summary.skipped_lines == {"vitals": {"row whose time is blank or not a finite number": 1}}
    assert summary.rows_with_skipped == {"vitals": 1}
    [(reason, count)] = summary.without["vitals"].items()
    assert count == 3 and "none is usable (skipped: N row whose time" in reason
    assert summary.missing_shares() == {"vitals": 3 / 60}
    assert summary.too_many_missing(0.1) == []
    [line] = summary.too_many_missing(0.04)
    assert "5.0% of rows were predicted without 'vitals'" in line
