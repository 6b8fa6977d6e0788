"""What a sensor file holds before it is put on a grid, and the messages its readers share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from encoders.readers.errors import ReaderError


@dataclass(frozen=True)
class Samples:
    """``N`` samples of the requested ``C`` channels.

    Attributes:
        times_s: ``(N,)`` float64 seconds.
        values: ``(N, C)`` float64, NaN where not observed.
        skipped: reason -> lines, rows or cells of the file that were skipped.
    """

    times_s: np.ndarray
    values: np.ndarray
    skipped: Mapping[str, int] = field(default_factory=dict)


def skip_note(skipped: Mapping[str, int]) -> str:
    """``", but none is usable (skipped: 3 line ...)"`` for an error message, or ``", but there is none"``."""
    if not skipped:
        return ", but there is none"
    return ", but none is usable (skipped: " + "; ".join(f"{n} {why}" for why, n in skipped.items()) + ")"


def no_channels(path: Path, channels: Sequence[str], has: Sequence[str], what: str) -> ReaderError:
    """The error for a file that holds none of the requested channels; lists (up to 30 of) its own."""
    listed = sorted(set(has))
    more = f" and {len(listed) - 30} more" if len(listed) > 30 else ""
    return ReaderError(
        path,
        f"none of the channels {list(channels)} is in this file; its {what} are {listed[:30]}{more}",
    )
