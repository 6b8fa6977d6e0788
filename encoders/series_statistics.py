"""The per-channel statistics of a measurement series (numpy only: no torch), what the per-variable
sensor tokens of :mod:`encoders.sensor_variables` embed and what the decoded cache keeps per file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SERIES_STATISTICS = ("first", "last", "min", "max", "mean", "count", "hours since last", "slope")
SLOPE = SERIES_STATISTICS.index("slope")


class GriddedSeries(Protocol):
    """What :func:`series_statistics` reads of :class:`encoders.readers.sensor_files.SensorArray` (and its ``cells()``,
    the flat indices of the observed cells, when the series has it)."""

    @property
    def values(self) -> np.ndarray:
        """(T, C) float32, 0 where unobserved."""

    @property
    def observed(self) -> np.ndarray:
        """(T, C) bool."""

    @property
    def rate_hz(self) -> float: ...

    @property
    def start_s(self) -> float: ...


@dataclass(frozen=True)
class SeriesStatistics:
    """The statistics of one series.

    Attributes:
        values: ``(C, S)`` float32 in the channel's units (count: measurements; hours since last:
            hours from the last measurement to the end of the series; slope: units per hour);
            0 where not observed.
        observed: ``(C, S)`` bool.
        skipped: reason -> count of lines, cells or values of the file left out while reading it.
    """

    values: np.ndarray
    observed: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)


def series_statistics(series: GriddedSeries) -> SeriesStatistics:
    """The :data:`SERIES_STATISTICS` of every channel of a gridded series.

    A cell's time is its centre, ``start_s + (i + 0.5) / rate_hz``; the series ends at the end of its
    last cell.
    """
    observed = np.asarray(series.observed, dtype=bool)
    steps, channels = observed.shape
    end = (float(series.start_s) + steps / float(series.rate_hz)) / 3600.0
    # Only observed cells are read: a long grid is mostly empty. Grouped by channel, time ascending.
    known = getattr(series, "cells", None)
    cells = known() if callable(known) else np.flatnonzero(observed)
    cells = cells[np.argsort(cells % channels, kind="stable")]
    step, channel = np.divmod(cells, channels)
    value = np.asarray(series.values, dtype=np.float64).reshape(-1)[cells]
    hour = (float(series.start_s) + (step + 0.5) / float(series.rate_hz)) / 3600.0
    count = np.bincount(channel, minlength=channels)
    seen = count > 0
    start = (np.cumsum(count) - count)[seen]
    stop = start + count[seen] - 1
    first, last, low, high, since = (np.zeros(channels) for _ in range(5))
    if seen.any():
        first[seen], last[seen] = value[start], value[stop]
        low[seen] = np.minimum.reduceat(value, start)
        high[seen] = np.maximum.reduceat(value, start)
        since[seen] = end - hour[stop]
    divisor = np.maximum(count, 1)
    mean = np.bincount(channel, weights=value, minlength=channels) / divisor
    mean_hour = np.bincount(channel, weights=hour, minlength=channels) / divisor
    centred = hour - mean_hour[channel]
    spread = np.bincount(channel, weights=centred**2, minlength=channels)
    has_slope = (count >= 2) & (spread > 1e-12)
    moment = np.bincount(channel, weights=centred * (value - mean[channel]), minlength=channels)
    slope = np.where(has_slope, moment / np.maximum(spread, 1e-12), 0.0)
    stats = np.stack([first, last, low, high, mean, count, since, slope], axis=1)
    mask = np.repeat(seen[:, None], len(SERIES_STATISTICS), axis=1)
    mask[:, SLOPE] = has_slope
    stats = np.where(mask & np.isfinite(stats), stats, 0.0)
    return SeriesStatistics(stats.astype(np.float32), mask & np.isfinite(stats))
