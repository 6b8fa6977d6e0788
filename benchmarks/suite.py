"""``make bench``: run every benchmark part and write its results under ``benchmarks/results/{quick,full}/``.

A part is a module (``benchmarks.<name>``, or any dotted module name) with

    def run(quick: bool, work: Path) -> list[dict]

returning rows ``{"benchmark", "method", "metric", "mean", "sd", "n", "anchor"}``: ``benchmark`` names
the table the row belongs to, ``mean``/``sd``/``anchor`` are finite numbers or None (``anchor`` is the
figure to compare with: a baseline's, the paper's, the CPU's), ``n`` is the number of measurements
(seeds, folds, epochs, patients) behind the mean. ``work`` is the part's own scratch folder under
``runs/bench/suite/`` (git-ignored). A part adds a line under its tables by logging to
:data:`NOTES_LOGGER` (``logging.getLogger("benchmarks.notes").info("...")``), e.g. why some rows are
absent.

Every part runs even when an earlier one fails: a part that raises, or returns a row that does not
validate, is recorded as failed (its traceback in ``runs/bench/suite/suite.log``, a one-line reason in
RESULTS.md) and the exit code is 1. A part listed as planned whose module does not exist yet is shown
as "not yet implemented", which is not a failure.

    python -m benchmarks.suite [--quick] [--parts speed,invase] [--out benchmarks] [--work runs/bench/suite]

Every result file has one shape, ``{"rows": [...], "run": {...}}``: ``<out>/<part>/results.json``
holds a part's rows and how it ran (status, seconds, machine, command), ``<out>/results.json`` the
rows of every part run this time; ``<out>/RESULTS.md`` adds when, where and how they were measured.
``<out>`` is ``benchmarks/results/quick`` or ``benchmarks/results/full`` (:mod:`benchmarks.paths`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Real
from pathlib import Path
from typing import Any

from benchmarks.paths import REPO as ROOT
from benchmarks.paths import RESULTS
from benchmarks.paths import WORK as BENCH_WORK
from pipelines.common.json_values import json_text

WORK = BENCH_WORK / "suite"
NOTES_LOGGER = "benchmarks.notes"
ROW_KEYS = ("benchmark", "method", "metric", "mean", "sd", "n", "anchor")

log = logging.getLogger("benchmarks.suite")


@dataclass(frozen=True)
class Part:
    """One benchmark part.

    Attributes:
        name: ``speed`` (module ``benchmarks.speed``) or a dotted module name.
        planned: the module is not written yet; while it is absent the part is "not yet implemented".
    """

    name: str
    planned: bool = False

    @property
    def module(self) -> str:
        return self.name if "." in self.name else f"benchmarks.{self.name}"


PARTS: tuple[Part, ...] = (
    Part("speed"),
    Part("invase"),
    Part("quality_p12"),
    Part("quality_synth"),
    Part("faithfulness"),
    Part("unimodal"),
)


@dataclass
class PartOutcome:
    """What one part produced: ``status`` is ``ok``, ``failed`` or ``not yet implemented``."""

    name: str
    status: str
    seconds: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


class RowError(ValueError):
    """A row that does not follow the results schema."""


def _finite_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def validate_row(row: Any) -> dict[str, Any]:
    """The row, checked against the schema (numbers converted to plain ``float``/``int``).

    Raises:
        RowError: a key is missing or unknown, a text field is empty, a number is NaN, infinite or not
            a number, or ``n`` is not a positive integer.
    """
    if not isinstance(row, dict):
        raise RowError(f"expected a dict with keys {', '.join(ROW_KEYS)}, got {type(row).__name__}")
    missing = [key for key in ROW_KEYS if key not in row]
    unknown = sorted(str(key) for key in row if key not in ROW_KEYS)
    if missing or unknown:
        raise RowError(f"keys missing: {missing or 'none'}; unknown keys: {unknown or 'none'}")
    for key in ("benchmark", "method", "metric"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise RowError(f"{key!r} must be a non-empty string, got {row[key]!r}")
    for key in ("mean", "sd", "anchor"):
        if not _finite_or_none(row[key]):
            raise RowError(f"{key!r} must be a finite number or null, got {row[key]!r} ({row['metric']})")
    n = row["n"]
    if isinstance(n, bool) or not isinstance(n, int | Real) or n != int(n) or n < 1:
        raise RowError(f"'n' must be a positive integer, got {n!r} ({row['metric']})")
    clean = {key: row[key] for key in ROW_KEYS}
    for key in ("mean", "sd", "anchor"):
        clean[key] = None if row[key] is None else float(row[key])
    clean["n"] = int(n)
    return clean


class _Notes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{error.__class__.__name__}: {first}"[:300]


def run_part(part: Part, *, quick: bool, work: Path) -> PartOutcome:
    """Import and run one part; never raises (failures come back as ``status="failed"``)."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(part.module)
    except ModuleNotFoundError as error:
        if part.planned and error.name == part.module:
            return PartOutcome(part.name, "not yet implemented")
        log.exception("part %s: cannot import %s", part.name, part.module)
        return PartOutcome(part.name, "failed", time.perf_counter() - started, reason=_reason(error))
    except Exception as error:
        log.exception("part %s: cannot import %s", part.name, part.module)
        return PartOutcome(part.name, "failed", time.perf_counter() - started, reason=_reason(error))
    notes = _Notes()
    notes_logger = logging.getLogger(NOTES_LOGGER)
    notes_logger.addHandler(notes)
    notes_logger.setLevel(logging.INFO)
    part_work = work / part.name
    part_work.mkdir(parents=True, exist_ok=True)
    try:
        log.info("part %s: running (%s)", part.name, "quick" if quick else "full")
        raw = module.run(quick, part_work)
        if not isinstance(raw, list):
            raise RowError(f"run() must return a list of rows, got {type(raw).__name__}")
        rows = []
        for index, row in enumerate(raw):
            try:
                rows.append(validate_row(row))
            except RowError as error:
                raise RowError(f"row {index}: {error}") from None
    except Exception as error:
        log.exception("part %s failed", part.name)
        return PartOutcome(
            part.name, "failed", time.perf_counter() - started, reason=_reason(error), notes=notes.lines
        )
    finally:
        notes_logger.removeHandler(notes)
    seconds = time.perf_counter() - started
    log.info("part %s: %d rows in %.1f s", part.name, len(rows), seconds)
    return PartOutcome(part.name, "ok", seconds, rows, notes=notes.lines)


def machine_info() -> dict[str, str]:
    """When, where and on what the suite runs (for the RESULTS.md header)."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = (
        ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        if torch.cuda.is_available()
        else "none"
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs ({usable} usable), host {platform.node()}",
        "python": platform.python_version(),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "GPU": gpus,
        "load average at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "code": _git_version(),
    }


def _git_version() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty else "")


def format_number(value: float | None) -> str:
    """A table cell: 4 significant digits, scientific notation for very large or small values."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 120 else f"{int(value // 60)} min {value % 60:.0f} s"


def benchmark_tables(rows: Sequence[dict[str, Any]]) -> str:
    """One markdown table per benchmark (in order of first appearance)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["benchmark"], []).append(row)
    blocks = []
    for benchmark, members in groups.items():
        lines = [
            f"### {_cell(benchmark)}",
            "",
            "| method | metric | mean ± sd | n | anchor |",
            "|---|---|---|---|---|",
        ]
        for row in members:
            value = format_number(row["mean"])
            if row["sd"] is not None:
                value += f" ± {format_number(row['sd'])}"
            lines.append(
                f"| {_cell(row['method'])} | {_cell(row['metric'])} | {value} | {row['n']} "
                f"| {format_number(row['anchor'])} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_results(
    outcomes: Sequence[PartOutcome], info: dict[str, str], *, quick: bool, command: str, seconds: float
) -> str:
    """RESULTS.md: how the run was made, the parts' status and times, one table per benchmark, notes."""
    header = {
        "mode": "quick (reduced sizes; `make bench` runs the full version)" if quick else "full",
        **{k: v for k, v in info.items() if k != "date"},
        "total wall time": _seconds(seconds),
    }
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{_cell(command)}` on {info.get('date', 'an unknown date')}. Generated file: "
        "edit `benchmarks/suite.py` or the parts, not this page.",
        "",
        "| run | |",
        "|---|---|",
        *(f"| {key} | {_cell(value)} |" for key, value in header.items()),
        "",
        "## Parts",
        "",
        "| part | status | wall time | rows | reason |",
        "|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        lines.append(
            f"| {_cell(outcome.name)} | {outcome.status} | {_seconds(outcome.seconds)} | {len(outcome.rows)} "
            f"| {_cell(outcome.reason or '')} |"
        )
    rows = [row for outcome in outcomes for row in outcome.rows]
    if rows:
        lines += ["", "## Results", "", benchmark_tables(rows)]
    noted = [outcome for outcome in outcomes if outcome.notes]
    if noted:
        lines += ["", "## Notes", ""]
        lines += [f"- {_cell(o.name)}: {_cell(note)}" for o in noted for note in o.notes]
    return "\n".join(lines) + "\n"


def select_parts(names: str | None) -> list[Part]:
    """The registered parts named in a comma-separated list (all when None); dotted names are modules.

    Raises:
        ValueError: a name that is neither registered nor a dotted module name.
    """
    if not names:
        return list(PARTS)
    known = {part.name: part for part in PARTS}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in known:
            chosen.append(known[name])
        elif "." in name:
            chosen.append(Part(name))
        else:
            raise ValueError(f"unknown part {name!r}; known: {', '.join(known)} (or a dotted module name)")
    return chosen


def run_suite(
    parts: Sequence[Part], *, quick: bool, work: Path = WORK, out: Path | None = None, command: str = ""
) -> list[PartOutcome]:
    """Run ``parts`` in order and write ``out/<part>/results.json``, ``out/results.json`` and
    ``out/RESULTS.md`` (``out`` defaults to ``benchmarks/results/quick`` or ``full``)."""
    out = out if out is not None else RESULTS / ("quick" if quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(work / "suite.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger("benchmarks")]  # the suite, the notes and every part's own logger
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        info = machine_info()
        log.info("suite: %s; %s", command, json.dumps(info))
        outcomes = [run_part(part, quick=quick, work=work) for part in parts]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    for outcome in outcomes:
        if outcome.status == "failed" and outcome.reason:
            outcome.reason += f" (traceback in {_shown(work / 'suite.log')})"
    run = {"command": command, "quick": quick, "machine": info}
    for outcome in outcomes:
        part_run = run | {"part": outcome.name, "status": outcome.status, "seconds": outcome.seconds}
        write_results(out / outcome.name / "results.json", outcome.rows, part_run)
    rows = [row for outcome in outcomes for row in outcome.rows]
    write_results(out / "results.json", rows, run | {"parts": [o.name for o in outcomes]})
    text = render_results(outcomes, info, quick=quick, command=command, seconds=time.perf_counter() - started)
    (out / "RESULTS.md").write_text(text, encoding="utf-8")
    return outcomes


def write_results(path: Path, rows: Sequence[dict[str, Any]], run: dict[str, Any]) -> None:
    """``{"rows": rows, "run": run}`` as JSON at ``path`` (NaN as null; folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text({"rows": list(rows), "run": run}, indent=1), encoding="utf-8")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Reduced sizes (make bench-quick).")
    parser.add_argument(
        "--parts", help=f"Comma-separated parts; default all: {', '.join(p.name for p in PARTS)}"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Results folder (default benchmarks/results/quick or full)."
    )
    parser.add_argument("--work", type=Path, default=WORK, help="Scratch folder (logs, cohorts, models).")
    args = parser.parse_args(argv)
    try:
        parts = select_parts(args.parts)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    command = "python -m benchmarks.suite " + " ".join(sys.argv[1:] if argv is None else argv)
    outcomes = run_suite(parts, quick=args.quick, work=args.work, out=args.out, command=command.strip())
    for outcome in outcomes:
        print(f"{outcome.name}: {outcome.status} {_seconds(outcome.seconds)} {outcome.reason or ''}".rstrip())
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
