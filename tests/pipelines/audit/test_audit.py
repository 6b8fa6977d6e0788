"""The hash-chained prediction audit log: appends, tamper detection, torn lines, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import tracemalloc
from pathlib import Path

import pytest

from data_schemas import AuditRecord, PredictionRecord, TokenWeight
from pipelines.audit.audit_log import (
    GENESIS_HASH,
    REDACTED_TOKEN,
    AuditLog,
    AuditLogError,
    canonical_json,
    read_record,
    verify_log,
)

MODEL_SHA = hashlib.sha256(b"model").hexdigest()


def _prediction(row: int) -> PredictionRecord:
    return PredictionRecord(
        row=row,
        patient_id=f"P{row:05d}",
        status="ok",
        risk=round(0.01 * (row % 97), 2),
        probabilities={"0": 1 - 0.01 * (row % 97), "1": 0.01 * (row % 97)},
        label="1" if row % 2 else "0",
        modality_present={"labs": True, "notes": row % 3 != 0},
        modality_weights={"labs": 0.625, "notes": 0.375},
        top_features=[
            TokenWeight(modality="labs", token="lactate", weight=0.5),
            TokenWeight(modality="notes", token="sepsis", weight=0.25),
        ],
        model_sha256=MODEL_SHA,
        input_sha256=hashlib.sha256(f"input {row}".encode()).hexdigest(),
    )


def _write_log(path: Path, n: int) -> list[AuditRecord]:
    return AuditLog(path).append(map(_prediction, range(1, n + 1)), user="alice", code_version="0.1.0+gabc")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_appends_continue_the_chain(tmp_path: Path):
    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    first = log.append([_prediction(1), _prediction(2)], user="alice", code_version="0.1.0")
    second = log.append((_prediction(r) for r in (3, 4, 5)), user="bob", code_version="0.1.1")

    assert [r.sequence for r in first + second] == [1, 2, 3, 4, 5]
    assert first[0].previous_hash == GENESIS_HASH
    assert second[0].previous_hash == first[-1].record_hash
    assert second[0].user == "bob"
    assert second[0].input_sha256 == _prediction(3).input_sha256
    result = verify_log(log.path)
    assert result.ok, result.problems
    assert result.records == 5
    assert result.head_sequence == 5
    assert result.head_hash == second[-1].record_hash


def test_record_hash_is_the_documented_canonical_json(tmp_path: Path):
    """An auditor's re-implementation from the line text alone gives the stored hash."""
    _write_log(tmp_path / "log.jsonl", 3)
    for line in _lines(tmp_path / "log.jsonl"):
        payload = json.loads(line)
        stored = payload.pop("record_hash")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == stored
        assert line.encode("utf-8") == canonical_json({**payload, "record_hash": stored}) + b"\n"


def test_a_batch_the_log_already_ends_with_is_not_appended_again(tmp_path: Path):
    """A resumed prediction run passes on again the chunk it logged just before it was killed."""
    log = AuditLog(tmp_path / "log.jsonl")
    first = log.append([_prediction(1), _prediction(2)], user="a", code_version="1", batch="run-a/0")
    again = log.append([_prediction(1), _prediction(2)], user="a", code_version="1", batch="run-a/0")
    other = log.append([_prediction(1), _prediction(2)], user="a", code_version="1", batch="run-b/0")
    unnamed = log.append([_prediction(3)], user="a", code_version="1")

    assert again == []
    assert [r.sequence for r in first + other + unnamed] == [1, 2, 3, 4, 5]
    assert [r.batch for r in first + other + unnamed] == ["run-a/0"] * 2 + ["run-b/0"] * 2 + [None]
    assert verify_log(log.path).ok
    assert "batch" not in json.loads(_lines(log.path)[-1]), "a record without a batch keeps its old JSON"
    assert json.loads(_lines(log.path)[0])["batch"] == "run-a/0"


def test_read_record_returns_the_logged_prediction(tmp_path: Path):
    records = _write_log(tmp_path / "log.jsonl", 5)
    record = read_record(tmp_path / "log.jsonl", 4)
    assert record == records[3]
    assert record.output == _prediction(4)
    with pytest.raises(AuditLogError, match="no record with sequence 9"):
        read_record(tmp_path / "log.jsonl", 9)


def test_edited_record_is_named_by_line(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    payload = json.loads(lines[2])
    payload["output"]["risk"] = 0.99
    lines[2] = json.dumps(payload) + "\n"
    path.write_text("".join(lines), encoding="utf-8")

    result = verify_log(path)
    assert not result.ok
    assert len(result.problems) == 1
    assert result.problems[0].startswith("line 3: record_hash mismatch")
    with pytest.raises(AuditLogError, match="edited"):
        read_record(path, 3)


def test_removed_record_is_detected(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    path.write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")

    result = verify_log(path)
    assert not result.ok
    assert result.records == 4
    assert any(p.startswith("line 2: sequence gap") for p in result.problems)
    assert any(p.startswith("line 2: previous_hash mismatch") for p in result.problems)
    assert all(p.startswith("line 2:") for p in result.problems)


def test_removed_first_record_is_detected(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 3)
    path.write_text("".join(_lines(path)[1:]), encoding="utf-8")
    problems = verify_log(path).problems
    assert any(p.startswith("line 1: previous_hash mismatch") for p in problems)


def test_swapped_records_are_detected(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines), encoding="utf-8")

    result = verify_log(path)
    assert not result.ok
    flagged = {p.split(":")[0] for p in result.problems}
    assert {"line 2", "line 3"} <= flagged
    assert not any("record_hash mismatch" in p for p in result.problems)


def test_torn_last_line_is_detected_and_append_refuses(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 3)
    intact = path.stat().st_size
    last = _lines(path)[-1].encode("utf-8")
    with path.open("ab") as handle:  # a fourth record cut off mid-write
        handle.write(last[: len(last) // 2])

    result = verify_log(path)
    assert not result.ok
    assert result.records == 3
    assert result.problems == [result.problems[0]]
    assert result.problems[0].startswith("line 4: torn last line")
    assert f"({intact} bytes)" in result.problems[0]
    with pytest.raises(AuditLogError, match=rf"torn.*truncate -s {intact} "):
        AuditLog(path).append([_prediction(4)], user="alice", code_version="0.1.0")
    assert path.stat().st_size == intact + len(last) // 2


def test_invalid_lines_are_named_without_their_contents(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 3)
    lines = _lines(path)
    lines.insert(1, "{not json P00042\n")
    lines[3] = json.dumps({**json.loads(lines[3]), "sequence": "three"}) + "\n"
    path.write_text("".join(lines), encoding="utf-8")

    problems = verify_log(path).problems
    assert problems[0].startswith("line 2: invalid JSON")
    assert problems[1].startswith("line 4: schema error (sequence:")
    assert not any("P00042" in p or "three" in p for p in problems)


def test_append_refuses_an_edited_last_record(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 2)
    lines = _lines(path)
    lines[-1] = lines[-1].replace('"user":"alice"', '"user":"mallory"')
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(AuditLogError, match="edited"):
        AuditLog(path).append([_prediction(3)], user="alice", code_version="0.1.0")


def test_word_piece_tokens_can_be_redacted(tmp_path: Path):
    (record,) = AuditLog(tmp_path / "log.jsonl").append(
        [_prediction(1)], user="alice", code_version="0.1.0", redact_tokens={"notes"}
    )
    tokens = {f.modality: f.token for f in record.output.top_features}
    assert tokens == {"labs": "lactate", "notes": REDACTED_TOKEN}
    assert "sepsis" not in (tmp_path / "log.jsonl").read_text(encoding="utf-8")
    assert verify_log(tmp_path / "log.jsonl").ok


def test_non_finite_numbers_are_refused(tmp_path: Path):
    output = _prediction(1).model_copy(update={"ood_score": float("nan")})
    with pytest.raises(AuditLogError, match="NaN or infinite"):
        AuditLog(tmp_path / "log.jsonl").append([output], user="alice", code_version="0.1.0")


def _append_worker(path: str, worker: int, barrier) -> None:
    log = AuditLog(path)
    barrier.wait()
    for i in range(20):
        log.append([_prediction(1000 * worker + i + 1)], user=f"worker{worker}", code_version="0.1.0")


@pytest.mark.slow
def test_concurrent_appenders_keep_one_chain(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_append_worker, args=(str(path), w, barrier)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]

    result = verify_log(path)
    assert result.ok, result.problems
    assert result.records == 40
    sequences = [json.loads(line)["sequence"] for line in _lines(path)]
    assert sorted(sequences) == list(range(1, 41))
    rows = {json.loads(line)["output"]["row"] for line in _lines(path)}
    assert len(rows) == 40


@pytest.mark.slow
def test_verify_streams_a_large_log(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 2_000)
    tracemalloc.start()
    try:
        assert verify_log(path).ok
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size / 20, f"verify held {peak} bytes of a {path.stat().st_size}-byte log"

    AuditLog(path).append(map(_prediction, range(2_001, 10_001)), user="alice", code_version="0.1.0")
    result = verify_log(path)
    assert result.ok, result.problems[:3]
    assert result.records == 10_000
    assert result.head_sequence == 10_000
