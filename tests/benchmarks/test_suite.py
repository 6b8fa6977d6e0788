"""The benchmark suite's frame: row validation, RESULTS.md, and parts that fail without stopping the rest."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from benchmarks.suite import (
    PARTS,
    Part,
    PartOutcome,
    RowError,
    main,
    render_results,
    run_part,
    run_suite,
    select_parts,
    validate_row,
)

ROW = {
    "benchmark": "speed",
    "method": "deepwe",
    "metric": "seconds",
    "mean": 1.0,
    "sd": 0.1,
    "n": 3,
    "anchor": None,
}
INFO = {
    "date": "2026-11-29 14:00 UTC",
    "machine": "Linux, 2 CPUs (2 usable)",
    "torch": "2.11.0, 2 threads",
    "GPU": "none",
}
PACKAGE = "fake_bench_parts"


def test_validate_row_accepts_a_good_row_and_returns_plain_numbers():
    clean = validate_row({**ROW, "mean": 2, "n": 3.0, "anchor": 0.5})
    assert clean == {**ROW, "mean": 2.0, "n": 3, "anchor": 0.5}
    assert type(clean["mean"]) is float and type(clean["n"]) is int


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": float("nan")}, "finite number or null"),
        ({"sd": float("inf")}, "finite number or null"),
        ({"anchor": "0.8"}, "finite number or null"),
        ({"mean": True}, "finite number or null"),
        ({"n": 0}, "positive integer"),
        ({"n": 2.5}, "positive integer"),
        ({"n": True}, "positive integer"),
        ({"method": " "}, "non-empty string"),
        ({"seed": 1}, "unknown keys: ['seed']"),
    ],
)
def test_validate_row_rejects_bad_rows(change, message):
    with pytest.raises(RowError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_row({**ROW, **change})


def test_validate_row_names_missing_keys():
    with pytest.raises(RowError, match=r"keys missing: \['metric'\]"):
        validate_row({k: v for k, v in ROW.items() if k != "metric"})


def test_results_page_has_a_table_per_benchmark_anchors_and_failures():
    speed = [{**ROW, "method": "deepwe | cpu", "mean": 12.3456, "sd": 0.5, "n": 2, "anchor": 20.0}]
    invase = [
        {
            **ROW,
            "benchmark": "invase syn1",
            "metric": "TPR",
            "mean": 0.8123,
            "sd": None,
            "n": 3,
            "anchor": 0.75,
        }
    ]
    outcomes = [
        PartOutcome("speed", "ok", 12.0, speed, notes=["no CUDA GPU here"]),
        PartOutcome("invase", "ok", 130.0, invase),
        PartOutcome("broken", "failed", 0.2, reason="RuntimeError: disk on fire"),
        PartOutcome("faithfulness", "not yet implemented"),
    ]
    text = render_results(
        outcomes, INFO, quick=True, command="python -m benchmarks.suite --quick", seconds=142
    )
    assert text.count("| method | metric | mean ± sd | n | anchor |") == 2
    assert "### speed\n" in text and "### invase syn1\n" in text
    assert r"| deepwe \| cpu | seconds | 12.35 ± 0.5 | 2 | 20 |" in text
    assert "| deepwe | TPR | 0.8123 | 3 | 0.75 |" in text
    assert "| broken | failed | 0.2 s | 0 | RuntimeError: disk on fire |" in text
    assert "| faithfulness | not yet implemented | – | 0 |  |" in text
    assert "| invase | ok | 2 min 10 s | 1 |" in text
    assert (
        "| mode | quick" in text and "| GPU | none |" in text and "| total wall time | 2 min 22 s |" in text
    )
    assert "- speed: no CUDA GPU here" in text


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """A real package of parts on sys.path: one that raises, one that works, one with a bad row."""
    package = tmp_path / "modules" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("def run(quick, work):\n    raise RuntimeError('disk on fire')\n")
    (package / "badrow.py").write_text(
        "def run(quick, work):\n    return [dict(benchmark='b', method='m', metric='x', mean=float('nan'),"
        " sd=None, n=1, anchor=None)]\n"
    )
    (package / "fine.py").write_text(
        textwrap.dedent(
            """
            import logging

            def run(quick, work):
                (work / "touched").write_text("yes")
                logging.getLogger("benchmarks.notes").info("fine ran with quick=%s", quick)
                return [dict(benchmark="fine", method="m", metric="seconds", mean=1.5, sd=0.5, n=2, anchor=1)]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    yield PACKAGE
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]


def test_suite_runs_every_part_after_a_failure_and_reports_each(fake_parts, tmp_path):
    parts = [Part(f"{fake_parts}.{name}") for name in ("broken", "fine", "badrow", "absent")]
    outcomes = run_suite(parts, quick=True, work=tmp_path / "work", out=tmp_path / "out", command="test")
    assert [o.status for o in outcomes] == ["failed", "ok", "failed", "failed"]
    assert (tmp_path / "work" / f"{fake_parts}.fine" / "touched").read_text() == "yes"
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["run"]["parts"] == [p.name for p in parts] and written["run"]["quick"] is True
    fine = json.loads((tmp_path / "out" / f"{fake_parts}.fine" / "results.json").read_text())
    assert fine["rows"] == written["rows"] and fine["run"]["status"] == "ok"
    broken = json.loads((tmp_path / "out" / f"{fake_parts}.broken" / "results.json").read_text())
    assert (broken["rows"], broken["run"]["status"]) == ([], "failed")
    rows = written["rows"]
    assert rows == [
        {
            "benchmark": "fine",
            "method": "m",
            "metric": "seconds",
            "mean": 1.5,
            "sd": 0.5,
            "n": 2,
            "anchor": 1.0,
        }
    ]
    page = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "RuntimeError: disk on fire (traceback in" in page
    assert "row 0: 'mean' must be a finite number or null" in page
    assert "ModuleNotFoundError" in page
    assert f"- {fake_parts}.fine: fine ran with quick=True" in page
    log = (tmp_path / "work" / "suite.log").read_text()
    assert "Traceback" in log and "disk on fire" in log


def test_main_exit_code_is_1_when_a_part_fails_and_0_otherwise(fake_parts, tmp_path):
    common = ["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    assert main(["--parts", f"{fake_parts}.fine,{fake_parts}.broken", *common]) == 1
    assert main(["--parts", f"{fake_parts}.fine", *common]) == 0


def test_a_planned_part_without_a_module_is_not_yet_implemented(fake_parts, tmp_path):
    outcome = run_part(Part(f"{fake_parts}.later", planned=True), quick=True, work=tmp_path)
    assert (outcome.status, outcome.reason) == ("not yet implemented", None)


def test_select_parts_by_name_and_module():
    assert [p.name for p in select_parts(None)] == [p.name for p in PARTS]
    assert [p.module for p in select_parts("speed, invase")] == ["benchmarks.speed", "benchmarks.invase"]
    assert select_parts("pkg.mod")[0].module == "pkg.mod"
    with pytest.raises(ValueError, match="unknown part 'sped'"):
        select_parts("sped")
