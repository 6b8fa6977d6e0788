"""Pieces shared by the benchmark scripts: command-line choices, console logging, torch threads."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import torch

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
