"""Command-line pieces shared by the benchmark scripts (``python -m benchmarks.<part>``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence


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
