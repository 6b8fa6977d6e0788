"""The command line every benchmark part shares: its options, where results go and their shape."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from benchmarks.command_line import output_path, part_parser, run_part
from benchmarks.paths import RESULTS, WORK


@dataclass(frozen=True)
class _Settings:
    seeds: int = 3
    torch_threads: int | None = None

    @classmethod
    def quick(cls) -> _Settings:
        return cls(seeds=1)


def _rows(quick: bool, work: Path, settings: _Settings) -> list[dict]:
    mean = math.nan if settings.seeds == 0 else float(settings.seeds)
    return [
        {"benchmark": "b", "method": "m", "metric": "x", "mean": mean, "sd": None, "n": 1, "anchor": None}
    ]


def test_every_part_has_quick_work_and_out_with_the_results_layout() -> None:
    parser = part_parser("invase", "d", quick="tiny")
    args = parser.parse_args(["--quick"])
    assert args.work == WORK / "invase"
    assert output_path(args, "invase") == RESULTS / "quick" / "invase" / "results.json"
    assert output_path(parser.parse_args([]), "invase") == RESULTS / "full" / "invase" / "results.json"


def test_run_part_writes_rows_and_run_and_fails_on_an_unmeasured_row(tmp_path: Path, capsys) -> None:
    parser = part_parser("fake", "d", quick="tiny")
    parser.add_argument("--seeds", type=int, default=None)
    out = tmp_path / "r.json"
    argv = ["--quick", "--out", str(out), "--seeds", "2", "--work", str(tmp_path)]
    args = parser.parse_args(argv)
    code = run_part(
        "fake",
        args,
        argv,
        _Settings,
        {"seeds": args.seeds},
        _rows,
        lambda settings, rows: f"table of {settings.seeds}",
        rows_facts=lambda rows: {"verdict": len(rows)},
    )
    assert code == 0 and "table of 2" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["rows"][0]["mean"] == 2.0
    assert written["run"]["settings"]["seeds"] == 2 and written["run"]["verdict"] == 1
    run_part("fake", args, argv, _Settings, {}, _rows, lambda settings, rows: f"table of {settings.seeds}")
    assert "table of 1" in capsys.readouterr().out  # --quick: the quick settings
    assert run_part("fake", args, argv, _Settings, {"seeds": 0}, _rows, lambda s, r: "") == 1
    assert json.loads(out.read_text())["rows"][0]["mean"] is None  # NaN written as null
