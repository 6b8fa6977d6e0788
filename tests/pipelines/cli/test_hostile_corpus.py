"""The hostile-input corpus: each case is generated here and run through the real ``deepwe`` command
in its own process, under a wall-clock timeout and an address-space limit.

Every case asserts the exit code, a message of one line (no traceback), and, for prediction, as
many output rows as input rows.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml

from pipelines.inference.partial_lock import locked_partial
from tests.conftest import REPO
from tests.pipelines.bundle_edits import bundle_with_config, huge_hidden_dim, rehash
from tests.pipelines.bundles.test_input_limits import BILLION_LAUGHS

MEMORY_LIMIT = 6 * 2**30  # address space: enough for torch, far below the blow-ups under test
TIMEOUT_S = 180


@dataclass
class Case:
    """A command to run and what must come out of it."""

    args: list[str]
    exit_code: int
    says: str  # appears in the output
    rows_in: int | None = None  # prediction cases: the output must have this many rows
    out: Path | None = None
    file_size_limit: int | None = None
    check: Callable[[], None] | None = None
    seconds: float = 60.0  # the command must answer within this


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float
    env: dict[str, str] = field(default_factory=dict)


def _limits(file_size: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if file_size is not None:  # a full disk, as the process sees it: writes past this fail
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def _run(case: Case) -> Ran:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *case.args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        preexec_fn=_limits(case.file_size_limit),
        env=env,
        cwd=REPO,
    )
    return Ran(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def _edit(folder: Path, edits: dict[tuple[int, str], str]) -> None:
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    for (row, column), value in edits.items():
        table.loc[row - 1, column] = value
    table.to_csv(folder / "cohort.csv", index=False)


def _first_with(folder: Path, column: str) -> int:
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    return next(i + 1 for i, cell in enumerate(table[column]) if cell)


def _predict(model: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", str(model), str(folder / "cohort.yaml"), "--out", str(out), "--device", "cpu", *extra]


# --- the cases ---------------------------------------------------------------------------------


def p12_lines_without_a_parameter(model, cohort, tmp):
    """Real PhysioNet 2012 records with '10:45,,1.9' lines: validated whole, lines counted."""
    source = REPO.parent / "shared" / "data" / "physionet2012" / "set-a"
    if not source.is_dir():
        pytest.skip("the PhysioNet 2012 set-a folder is not in ../shared/data")
    folder = tmp / "p12"
    (folder / "records").mkdir(parents=True)
    names = sorted(p.name for p in source.glob("*.txt"))[:5]
    for i, name in enumerate(names):
        lines = (source / name).read_text().splitlines()
        if i % 2 == 0:
            lines[5:5] = ["10:45,,1.9", "10:46,,2.0"]
        (folder / "records" / name).write_text("\n".join(lines) + "\n")
    pd.DataFrame(
        {"stay": [n[:-4] for n in names], "ts": [f"records/{n}" for n in names], "died": [0, 1, 0, 1, 0]}
    ).to_csv(folder / "cohort.csv", index=False)
    spec = {
        "name": "p12",
        "table": "cohort.csv",
        "id": "stay",
        "outcome": {"column": "died"},
        "modalities": {
            "ts": {"kind": "sensor", "column": "ts", "channels": ["HR", "Temp"], "period_s": 3600}
        },
    }
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return Case(
        ["validate", str(folder / "cohort.yaml")],
        0,
        "6  skipped in 'ts' files (3 rows affected): line without 3 fields",
    )


def yaml_alias_bomb(model, cohort, tmp):
    (tmp / "bomb.yaml").write_text(BILLION_LAUGHS)
    return Case(["validate", str(tmp / "bomb.yaml")], 2, "without YAML anchors or aliases", seconds=20)


def forty_thousand_unknown_keys(model, cohort, tmp):
    extra = "\n".join(f"k{i}: 1" for i in range(40_000))
    (tmp / "keys.yaml").write_text(f"name: x\ntable: t.csv\nid: pid\n{extra}\n")
    return Case(["validate", str(tmp / "keys.yaml"), "--max-shown", "3"], 2, "40001 problem(s)", seconds=40)


def extreme_lab_value(model, cohort, tmp):
    _edit(cohort, {(3, "lactate"): "1e300"})
    out = tmp / "p.csv"

    def check() -> None:
        row = pd.read_csv(out).iloc[2]
        assert row["status"] == "ok" and "labs.lactate" in row["out_of_range"]

    return Case(_predict(model, cohort, out), 0, "60 rows", rows_in=60, out=out, check=check)


def escaping_paths(model, cohort, tmp):
    (tmp / "secret.png").write_bytes((next((cohort / "cxr").glob("*"))).read_bytes())
    (cohort / "cxr" / "link.dcm").symlink_to(tmp / "secret.png")
    rows = [
        i + 1
        for i, c in enumerate(pd.read_csv(cohort / "cohort.csv", dtype=str)["cxr_path"])
        if isinstance(c, str)
    ]
    _edit(
        cohort,
        {
            (rows[0], "cxr_path"): "../secret.png",
            (rows[1], "cxr_path"): "/etc/passwd",
            (rows[2], "cxr_path"): "cxr/link.dcm",
        },
    )
    out = tmp / "p.parquet"

    def check() -> None:
        frame = pd.read_parquet(out)
        for row in rows[:3]:
            assert frame.iloc[row - 1]["error"].startswith(f"row {row}, column 'cxr_path': path refused")

    return Case(
        _predict(model, cohort, out),
        0,
        "3  row N, column 'cxr_path': path refused",
        rows_in=60,
        out=out,
        check=check,
    )


def silent_recording(model, cohort, tmp):
    row = _first_with(cohort, "pcg_path")
    soundfile.write(cohort / "pcg" / "silent.wav", np.zeros(12_000), 4000)
    _edit(cohort, {(row, "pcg_path"): "pcg/silent.wav"})
    out = tmp / "p.parquet"

    def check() -> None:
        assert "a silent recording" in pd.read_parquet(out).iloc[row - 1]["error"]

    args = _predict(model, cohort, out, "--on-bad-file", "error")
    return Case(args, 0, "1  unreadable input in pcg", rows_in=60, out=out, check=check)


def huge_sensor_file(model, cohort, tmp):
    row = _first_with(cohort, "vitals_path")
    with (cohort / "vitals" / "huge.csv").open("w") as handle:
        handle.write("time,HR,SpO2,MAP,RR\n")
        handle.writelines(f"{i * 0.001:.3f},70.0,97.0,80.0,15.0\n" for i in range(1_000_000))  # 28 MB
    _edit(cohort, {(row, "vitals_path"): "vitals/huge.csv"})
    out = tmp / "p.parquet"
    return Case(
        _predict(model, cohort, out), 0, "rows predicted without 'vitals'", rows_in=60, out=out, seconds=60
    )


def sensor_lines_broken_in_many_rows(model, cohort, tmp):
    for path in sorted((cohort / "vitals").glob("*.csv"))[:12]:
        path.write_text("time,HR,SpO2,MAP,RR\n10:45,,1.9\n")
    out = tmp / "p.parquet"
    return Case(_predict(model, cohort, out), 1, "more than --allow-missing-share 0.1", rows_in=60, out=out)


def bundle_config_of_a_billion(model, cohort, tmp):
    bundle = bundle_with_config(model, tmp / "bundle", huge_hidden_dim)
    return Case(
        _predict(bundle, cohort, tmp / "p.parquet"),
        2,
        "fusion.hidden_dim = 1000000000 is not a size",
        seconds=30,
    )


def malformed_safetensors_header(model, cohort, tmp):
    bundle = tmp / "bundle"
    shutil.copytree(model, bundle)
    (bundle / "weights.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    rehash(bundle)
    return Case(_predict(bundle, cohort, tmp / "p.parquet"), 2, "not a valid safetensors file", seconds=30)


def second_writer_of_one_output(model, cohort, tmp):
    out = tmp / "p.parquet"
    holder = locked_partial(out)
    holder.__enter__()  # this test process plays the first run, holding the output
    case = Case(
        _predict(model, cohort, out), 1, f"another deepwe predict is writing {out} (pid {os.getpid()})"
    )

    def check() -> None:
        holder.__exit__(None, None, None)
        assert (tmp / "p.parquet.partial").is_dir() and not out.exists()

    case.check = check
    return case


def disk_full(model, cohort, tmp):
    out = tmp / "p.csv"
    out.write_text("the previous output\n")

    def check() -> None:
        assert out.read_text() == "the previous output\n"

    return Case(
        _predict(model, cohort, out, "--chunk-size", "10"), 1, "could not write the output: File too large",
        out=None, file_size_limit=40_000, check=check,
    )  # fmt: skip


def refused_run_leaves_no_partial(model, cohort, tmp):
    log = tmp / "audit.jsonl"
    log.write_text('{"torn')
    out = tmp / "p.parquet"

    def check() -> None:
        assert not (tmp / "p.parquet.partial").exists() and not out.exists()

    return Case(
        _predict(model, cohort, out, "--audit-log", str(log)), 2, "the last line is torn", check=check
    )


def formula_in_an_id(model, cohort, tmp):
    _edit(cohort, {(1, "patient_id"): '=HYPERLINK("http://x","y")', (2, "patient_id"): "@SUM(1)"})
    out = tmp / "p.csv"

    def check() -> None:
        raw = pd.read_csv(out, dtype=str)["patient_id"]
        assert raw[0].startswith("'=HYPERLINK") and raw[1] == "'@SUM(1)"

    return Case(_predict(model, cohort, out), 0, "60 rows", rows_in=60, out=out, check=check)


def semicolon_table(model, cohort, tmp):
    table = pd.read_csv(cohort / "cohort.csv", dtype=str, keep_default_na=False)
    table.to_csv(cohort / "cohort.csv", index=False, sep=";")
    return Case(["validate", str(cohort / "cohort.yaml")], 2, "';' between the names: save it with commas")


def truncated_audit_log(model, cohort, tmp):
    log = tmp / "audit.jsonl"
    from pipelines.audit.audit_log import AuditLog
    from tests.pipelines.audit.test_audit import _prediction

    AuditLog(log).append([_prediction(r) for r in range(1, 6)], user="alice", code_version="0")
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    return Case(
        ["audit", "verify", str(log)], 1, "head: the log ends at sequence 3 but audit.jsonl.head records"
    )


CASES = [
    p12_lines_without_a_parameter,
    yaml_alias_bomb,
    forty_thousand_unknown_keys,
    extreme_lab_value,
    escaping_paths,
    silent_recording,
    huge_sensor_file,
    sensor_lines_broken_in_many_rows,
    bundle_config_of_a_billion,
    malformed_safetensors_header,
    second_writer_of_one_output,
    disk_full,
    refused_run_leaves_no_partial,
    formula_in_an_id,
    semicolon_table,
    truncated_audit_log,
]


@pytest.mark.slow  # each case runs the command line in a fresh process
@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input(make, bundle_path, cohort_60, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, cohort)
    case = make(bundle_path, cohort, tmp_path)
    ran = _run(case)
    output = ran.stdout + ran.stderr
    assert ran.code == case.exit_code, output
    assert "Traceback" not in output, output
    assert case.says in output, output
    message = next(line for line in output.splitlines() if case.says.split("\n")[0][:30] in line)
    assert case.says in message, f"the message spans several lines: {output}"
    assert ran.seconds < case.seconds, f"{ran.seconds:.0f} s"
    if case.rows_in is not None:
        out = case.out
        rows = len(pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out))
        assert rows == case.rows_in
    if case.check is not None:
        case.check()
