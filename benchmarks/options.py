"""Pieces shared by the benchmark scripts: command-line choices, console logging, torch threads,
the JSON of a run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipelines.common.json_values import json_text

T = TypeVar("T")


def subset_of(known: Sequence[str], *, none: bool = False) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type`` for a comma-separated choice among ``known`` (``none`` allows "none" = ()).

    Unknown names are refused by argparse itself (exit 2) with the names it takes.
    """

    def parse(text: str) -> tuple[str, ...]:
        if none and text.strip() == "none":
            return ()
        chosen = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            extra = ", or 'none'" if none else ""
            raise argparse.ArgumentTypeError(
                f"takes some of {', '.join(known)}{extra} (comma-separated); got {text!r}"
            )
        return chosen

    return parse


def log_to_console() -> None:
    """INFO lines with the time, as every benchmark script prints its progress."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (None: leave as is), restored after.

    The benchmark parts use one: their models are small, and on a shared 2-core machine a second
    thread costs more in synchronisation than it gains (5-10 times slower under load, measured).
    """
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_overrides(settings: T, overrides: Mapping[str, Any]) -> T:
    """``settings`` (a frozen dataclass) with the options the user gave; None means "not given"."""
    return replace(settings, **{name: value for name, value in overrides.items() if value is not None})


def write_run(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    script: str,
    argv: Sequence[str] | None,
    settings: Any,
    **facts: Any,
) -> None:
    """Write ``{"rows": rows, "run": facts}`` as JSON: the command, the settings, the machine's CPU
    count, torch threads and load average at the end, plus ``facts`` (a script's own)."""
    threads = getattr(settings, "torch_threads", None)
    run = {
        "command": f"python -m benchmarks.{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": asdict(settings),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    } | facts
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text({"rows": list(rows), "run": run}, indent=1), encoding="utf-8")
