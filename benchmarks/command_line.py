"""The command line every benchmark part shares: ``python -m benchmarks.<part> [--quick] [--work W]
[--out F] [part options]``, its results written where :mod:`benchmarks.paths` says, in the one shape
``{"rows": [...], "run": {...}}``."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from benchmarks.options import log_to_console, subset_of, with_overrides, write_run
from benchmarks.paths import WORK, results_path

S = TypeVar("S")


class PartSettings(Protocol[S]):  # type: ignore[misc]
    """A part's settings class: its defaults are the full run, ``quick()`` the reduced one."""

    def __call__(self) -> S: ...

    def quick(self) -> S: ...


def part_parser(part: str, description: str, *, quick: str) -> argparse.ArgumentParser:
    """A parser with the options every part has: ``--quick`` (``quick`` says what it runs),
    ``--work`` (default ``runs/bench/<part>``) and ``--out`` (default
    ``benchmarks/results/{quick,full}/<part>/results.json``). Parts add their own options."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{part}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--work", type=Path, default=WORK / part, help="where imports, cohorts and models go")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the JSON of results (default benchmarks/results/quick|full/{part}/results.json)",
    )
    return parser


def add_datasets_option(parser: argparse.ArgumentParser, known: Sequence[str]) -> None:
    """``--datasets a,b``: some of ``known`` (default all)."""
    parser.add_argument(
        "--datasets", type=subset_of(known), default=None, help=f"some of {','.join(known)} (default all)"
    )


def output_path(args: argparse.Namespace, part: str) -> Path:
    """``--out``, else the part's results file for the mode of ``--quick``."""
    return args.out if args.out is not None else results_path(part, args.quick)


def run_part(
    part: str,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    settings: PartSettings[S],
    overrides: Mapping[str, Any],
    run: Callable[[bool, Path, S], list[dict[str, Any]]],
    report: Callable[[S, list[dict[str, Any]]], str],
    rows_facts: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    **facts: Any,
) -> int:
    """Run a part from its command line: ``settings.quick()`` or ``settings()`` with the options
    given, the rows,
    the JSON of the run (with ``facts``, and ``rows_facts(rows)`` such as a verdict), and ``report``
    (a table) on stdout.

    Returns:
        0, or 1 when there is no row or a row's mean is not finite (a metric that could not be
        measured).
    """
    log_to_console()
    chosen = with_overrides(settings.quick() if args.quick else settings(), overrides)
    started = time.perf_counter()
    rows = run(args.quick, args.work, chosen)
    seconds = time.perf_counter() - started
    out = output_path(args, part)
    facts |= rows_facts(rows) if rows_facts is not None else {}
    write_run(out, rows, script=part, argv=argv, settings=chosen, seconds=round(seconds, 1), **facts)
    print(report(chosen, rows))
    print(f"\nwrote {out} ({seconds / 60:.1f} min in all)", file=sys.stdout)
    return 0 if rows and all(math.isfinite(r["mean"]) for r in rows) else 1
