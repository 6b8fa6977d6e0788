"""One writer per output, no row delivered unlogged, and hashes of the bytes actually used."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pipelines.audit.audit_log import AuditLog, unlogged, verify_log
from pipelines.cohorts.cohort_table import load_cohort, read_table
from pipelines.inference.batching import PredictionDataset, PredictOptions, input_sha256
from pipelines.inference.output_table import neutralised, read_predictions, row_to_record
from pipelines.inference.partial_lock import OutputBusy, locked_partial
from pipelines.inference.predict import OutputWriteError, PredictAborted, predict_cohort


def _ids(path: Path) -> list[str]:
    return list(read_predictions(path)["patient_id"].astype(str))


def test_a_second_writer_of_the_same_output_is_refused_naming_the_pid(bundle, cohort_60, tmp_path):
    out = tmp_path / "p.parquet"
    with locked_partial(out):
        with pytest.raises(
            OutputBusy, match=rf"another deepwe predict is writing {out} \(pid {os.getpid()}\)"
        ):
            predict_cohort(bundle, cohort_60, out, progress=False)
        assert (tmp_path / "p.parquet.partial").is_dir()  # the holder's folder is left alone
    predict_cohort(bundle, cohort_60, out, progress=False)
    assert len(read_predictions(out)) == 60 and not (tmp_path / "p.parquet.partial").exists()


def test_a_killed_writers_forked_children_do_not_keep_its_output_locked(tmp_path):
    """DataLoader workers forked by a run killed with -9 live on for a few seconds; the lock must not."""
    out = tmp_path / "p.parquet"
    holder = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from pipelines.inference.partial_lock import locked_partial
        with locked_partial(Path({str(out)!r})):
            if os.fork() == 0:  # a worker, as DataLoader forks them
                time.sleep(60)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"\(pid {process.pid}\)"), locked_partial(out):
            pass
        worker = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert worker, "the holder forked no worker"
        process.kill()
        process.wait()
        assert Path(f"/proc/{worker[0]}").exists(), "the forked worker must outlive the killed holder"
        with locked_partial(out) as partial:
            assert (partial / "owner.pid").read_text().strip() == str(os.getpid())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker, left in the holder's group


def test_another_cohort_never_takes_over_finished_chunks(bundle, cohort_60, cohort_copy, tmp_path):
    table = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    table["patient_id"] = [f"OTHER-{i}" for i in range(len(table))]
    table.loc[:39, "pcg_path"] = "pcg/gone.wav"
    table.to_csv(cohort_copy / "cohort.csv", index=False)
    out = tmp_path / "p.parquet"
    options = PredictOptions(on_bad_file="error", max_errors=1, chunk_size=10)
    with pytest.raises(PredictAborted):
        predict_cohort(bundle, cohort_copy / "cohort.yaml", out, options, progress=False)
    assert list((tmp_path / "p.parquet.partial").glob("chunk-*.parquet"))
    with pytest.raises(ValueError, match="another model, cohort or options"):
        predict_cohort(bundle, cohort_60, out, PredictOptions(chunk_size=10), resume=True, progress=False)
    predict_cohort(bundle, cohort_60, out, PredictOptions(chunk_size=10), progress=False)
    expected = pd.read_csv(cohort_60.parent / "cohort.csv", dtype=str)["patient_id"].tolist()
    assert _ids(out) == expected


class _FailingLog:
    """The audit log, failing on its ``fail_on``-th append as a full disk or a torn log would."""

    def __init__(self, path: Path, fail_on: int) -> None:
        self.log, self.calls, self.fail_on = AuditLog(path), 0, fail_on

    def __call__(self, records, batch: str) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError(28, "No space left on device", str(self.log.path))
        self.log.append(records, user="tester", code_version="test", batch=batch)


def test_a_chunk_is_delivered_only_once_logged_and_verify_checks_delivery(bundle, cohort_60, tmp_path):
    out, log = tmp_path / "p.parquet", tmp_path / "audit.jsonl"
    options = PredictOptions(chunk_size=20)
    with pytest.raises(OutputWriteError, match="No space left"):
        predict_cohort(bundle, cohort_60, out, options, progress=False, on_records=_FailingLog(log, 2))
    partial = tmp_path / "p.parquet.partial"
    assert not out.exists()
    # The second chunk was predicted but never logged: it has no marker and is not delivered.
    assert [c.name for c in sorted(partial.glob("chunk-*.taken"))] == ["chunk-000000.taken"]
    assert verify_log(log).records == 20
    summary = predict_cohort(
        bundle, cohort_60, out, options, resume=True, progress=False, on_records=_FailingLog(log, 0)
    )
    assert summary.resumed_chunks == 2 and summary.rows == 60
    delivered = [row_to_record(r) for r in read_predictions(out).to_dict("records")]
    assert verify_log(log).ok and unlogged(log, delivered) == []
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:50]))
    (tmp_path / "audit.jsonl.head").unlink()
    assert verify_log(log).ok and unlogged(log, delivered) == list(range(51, 61))


def test_a_run_killed_after_logging_a_chunk_but_before_marking_it_logs_it_once(bundle, cohort_60, tmp_path):
    out, log = tmp_path / "p.parquet", tmp_path / "audit.jsonl"
    options = PredictOptions(chunk_size=20)

    def logged_then_killed(records, batch: str) -> None:
        AuditLog(log).append(records, user="tester", code_version="test", batch=batch)
        if records[0].row == 21:
            raise KeyboardInterrupt  # the driver dies before it marks the chunk as passed on

    with pytest.raises(KeyboardInterrupt):
        predict_cohort(bundle, cohort_60, out, options, progress=False, on_records=logged_then_killed)
    assert verify_log(log).records == 40
    predict_cohort(
        bundle, cohort_60, out, options, resume=True, progress=False, on_records=_FailingLog(log, 0)
    )
    rows = [json.loads(line)["output"]["row"] for line in log.read_text().splitlines()]
    assert rows == list(range(1, 61))


def test_a_run_refused_before_any_chunk_leaves_no_partial_folder(bundle, cohort_60, tmp_path):
    out = tmp_path / "p.parquet"
    with pytest.raises(OutputWriteError, match="No space left"):
        predict_cohort(
            bundle, cohort_60, out, progress=False, on_records=_FailingLog(tmp_path / "a.jsonl", 1)
        )
    assert not (tmp_path / "p.parquet.partial").exists() and not out.exists()


class _Rewriter:
    """A reader that, before reading, rewrites its file the first ``times`` calls: a concurrent writer."""

    def __init__(self, read, times: int) -> None:
        self.read, self.times, self.calls = read, times, 0

    def __call__(self, path: str):
        self.calls += 1
        if self.calls <= self.times:
            with open(path, "a") as handle:
                handle.write(f"{3000 + self.calls},70,97,80,15\n")
        return self.read(path)


@pytest.mark.parametrize("rewrites", [1, 5])
def test_the_input_hash_is_of_the_bytes_that_were_read(bundle, cohort_copy, rewrites):
    cohort = load_cohort(cohort_copy / "cohort.yaml")
    position = next(i for i, r in enumerate(cohort.records()) if r.paths.get("vitals"))
    records = list(cohort.records([position]))
    table = cohort.table.iloc[[position]].reset_index(drop=True)
    dataset = PredictionDataset(bundle, cohort, records, table)
    rewriter = _Rewriter(dataset.inner.readers["vitals"], rewrites)
    dataset.inner.readers["vitals"] = rewriter
    sample, digest, _ = dataset[0]
    if rewrites == 1:
        assert rewriter.calls == 2 and sample.refused is None
        assert digest == input_sha256(cohort, records[0], dataset.rows[0])  # the bytes of the second read
    else:
        assert (
            sample.refused == f"row {records[0].row}: its input files changed while they were read (3 tries)"
        )


def test_formula_like_text_is_neutralised_in_csv_and_restored_on_reading(tmp_path):
    frame = pd.DataFrame(
        {"patient_id": ['=HYPERLINK("x")', "+1", "-2", "@A", "\tB", "P7"], "risk": [0.1] * 6}
    )
    safe = neutralised(frame)
    assert safe["patient_id"].tolist() == ['\'=HYPERLINK("x")', "'+1", "'-2", "'@A", "'\tB", "P7"]
    safe.to_csv(tmp_path / "p.csv", index=False)
    assert read_predictions(tmp_path / "p.csv")["patient_id"].tolist() == frame["patient_id"].tolist()


def test_a_semicolon_separated_table_gets_a_delimiter_hint(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_text("patient_id;age\nP1;54\n")
    with pytest.raises(ValueError, match="';' between the names: save it with commas"):
        read_table(path)
