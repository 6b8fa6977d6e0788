"""The audit log's head sidecar and optional key: truncation and re-chained forgeries are caught."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipelines.audit.audit_log import (
    KEY_VARIABLE,
    AuditLog,
    AuditLogError,
    _write_head,
    canonical_json,
    head_path,
    record_hash,
    unlogged,
    verify_log,
)
from tests.pipelines.audit.test_audit import _lines, _prediction, _write_log


def test_removing_whole_last_lines_is_reported_and_append_refuses(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    records = _write_log(path, 5)
    head = json.loads(head_path(path).read_text())
    assert head == {"sequence": 5, "record_hash": records[-1].record_hash}
    path.write_text("".join(_lines(path)[:3]), encoding="utf-8")
    result = verify_log(path)
    assert not result.ok
    assert result.problems == [
        "head: the log ends at sequence 3 but log.jsonl.head records the head at sequence 5: records "
        "were removed from the end, or added without deepwe"
    ]
    with pytest.raises(AuditLogError, match=r"ends at sequence 3.*refusing to append"):
        AuditLog(path).append([_prediction(6)], user="alice", code_version="0.1.0")
    path.write_text("", encoding="utf-8")
    assert "ends at sequence 0" in verify_log(path).problems[0]


def _rechain(path: Path, change) -> None:
    """Edit every record with ``change`` and rebuild the whole chain, as a forger without the key would."""
    previous, lines, last = "0" * 64, [], None
    for line in _lines(path):
        payload = json.loads(line)
        change(payload)
        payload["previous_hash"] = previous
        payload.pop("record_hash")
        payload["record_hash"] = previous = hashlib.sha256(canonical_json(payload)).hexdigest()
        lines.append(canonical_json(payload) + b"\n")
        last = payload
    path.write_bytes(b"".join(lines))
    head_path(path).write_bytes(
        canonical_json({"sequence": last["sequence"], "record_hash": previous}) + b"\n"
    )


def _lower_risk(payload: dict) -> None:
    payload["output"]["risk"] = 0.01


def test_without_a_key_a_full_rechain_passes_and_with_a_key_it_fails(tmp_path: Path, monkeypatch):
    plain = tmp_path / "plain.jsonl"
    _write_log(plain, 4)
    _rechain(plain, _lower_risk)
    assert verify_log(plain).ok  # documented: the chain alone cannot catch this

    monkeypatch.setenv(KEY_VARIABLE, "a secret only the service knows")
    keyed = tmp_path / "keyed.jsonl"
    records = _write_log(keyed, 4)
    assert verify_log(keyed).ok
    assert record_hash(records[0]) == records[0].record_hash
    _rechain(keyed, _lower_risk)
    [problem] = verify_log(keyed).problems
    assert problem.startswith("head: the HMAC in keyed.jsonl.head does not match")
    with pytest.raises(AuditLogError, match="HMAC"):
        AuditLog(keyed).append([_prediction(5)], user="alice", code_version="0.1.0")
    head_path(keyed).unlink()
    assert "is missing" in verify_log(keyed).problems[0]


def test_unlogged_names_the_delivered_rows_the_log_lacks(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 3)
    delivered = [_prediction(r) for r in (1, 2, 3, 4, 5)]
    assert unlogged(path, delivered) == [4, 5]
    changed = delivered[1].model_copy(update={"risk": 0.5})
    assert unlogged(path, [changed]) == [2]


def test_audit_verify_with_predictions_lists_undelivered_log_rows(tmp_path: Path):
    import pandas as pd
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.inference.output_table import record_to_row

    log, out = tmp_path / "log.jsonl", tmp_path / "p.csv"
    _write_log(log, 3)
    pd.DataFrame([record_to_row(_prediction(r)) for r in range(1, 6)]).to_csv(out, index=False)
    result = CliRunner().invoke(app, ["audit", "verify", str(log), "--predictions", str(out)])
    assert result.exit_code == 1
    assert f"2 delivered rows of {out} are not in the log: rows 4, 5" in result.output
    pd.DataFrame([record_to_row(_prediction(r)) for r in range(1, 4)]).to_csv(out, index=False)
    result = CliRunner().invoke(app, ["audit", "verify", str(log), "--predictions", str(out)])
    assert result.exit_code == 0 and "all 3 delivered rows logged" in result.output


def test_an_append_killed_before_its_head_write_is_completed_by_the_next_without_a_key(
    tmp_path: Path, monkeypatch
):
    path = tmp_path / "log.jsonl"
    records = _write_log(path, 5)
    # A writer killed after its records reached the log but before it moved the head.
    head_path(path).write_bytes(
        canonical_json({"sequence": 3, "record_hash": records[2].record_hash}) + b"\n"
    )
    [appended] = AuditLog(path).append([_prediction(6)], user="alice", code_version="0.1.0")
    assert appended.sequence == 6 and appended.previous_hash == records[-1].record_hash
    assert verify_log(path).ok

    # A head that names a record the log does not hold is not a lag: refused as before.
    head_path(path).write_bytes(canonical_json({"sequence": 2, "record_hash": "f" * 64}) + b"\n")
    with pytest.raises(AuditLogError, match="refusing to append"):
        AuditLog(path).append([_prediction(7)], user="alice", code_version="0.1.0")

    # With a key, records after the head could be anyone's: the key holder must look first.
    monkeypatch.setenv(KEY_VARIABLE, "a secret only the service knows")
    keyed = tmp_path / "keyed.jsonl"
    keyed_records = _write_log(keyed, 4)
    _write_head(head_path(keyed), keyed_records[1].sequence, keyed_records[1].record_hash)
    with pytest.raises(AuditLogError, match="refusing to append"):
        AuditLog(keyed).append([_prediction(5)], user="alice", code_version="0.1.0")
