"""The per-channel statistics of a measurement series (numpy only: no torch), what the per-variable
sensor tokens of :mod:`encoders.sensor_variables` embed and what the decoded cache keeps per file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SERIES_STATISTICS = ("first", "last", "min", "max", "mean", "count", "hours since last", "slope")
SLOPE = SERIES_STATISTICS.index("slope")
MEAN = SERIES_STATISTICS.index("mean")


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
class SeriesObservations:
    """Every measurement of one series, oldest first.

    Attributes:
        hours_before_end: ``(N,)`` float32, hours from the measurement to the end of the series.
        channel: ``(N,)`` int64 channel index.
        value: ``(N,)`` float32 in the channel's units.
    """

    hours_before_end: np.ndarray
    channel: np.ndarray
    value: np.ndarray


@dataclass(frozen=True)
class SeriesStatistics:
    """The statistics of one series.

    Attributes:
        values: ``(C, S)`` float32 in the channel's units (count: measurements; hours since last:
            hours from the last measurement to the end of the series; slope: units per hour);
            0 where not observed.
        observed: ``(C, S)`` bool.
        skipped: reason -> count of lines, cells or values of the file left out while reading it.
        observations: the measurements themselves, for trajectory tokens (None when not kept).
    """

    values: np.ndarray
    observed: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    observations: SeriesObservations | None = None


@dataclass(frozen=True)
class ObservedCells:
    """The observed cells of F gridded series with C channels, flattened together.

    Attributes:
        owner: ``(K,)`` int64 series of each observed cell, ascending.
        cells: ``(K,)`` int64 flat index of each cell in its series' ``(T, C)`` grid, ascending
            within a series.
        values: ``(K,)`` float64 values of the cells.
        channels: C.
        steps: ``(F,)`` grid length T of each series.
        start_s: ``(F,)`` float64 time of each series' cell 0.
        rate_hz: ``(F,)`` float64 grid rate of each series.
    """

    owner: np.ndarray
    cells: np.ndarray
    values: np.ndarray
    channels: int
    steps: np.ndarray
    start_s: np.ndarray
    rate_hz: np.ndarray


def series_statistics(series: GriddedSeries, *, keep_observations: bool = False) -> SeriesStatistics:
    """The :data:`SERIES_STATISTICS` of every channel of a gridded series (and, with
    ``keep_observations``, its measurements).

    A cell's time is its centre, ``start_s + (i + 0.5) / rate_hz``; the series ends at the end of its
    last cell.
    """
    observed = np.asarray(series.observed, dtype=bool)
    steps, channels = observed.shape
    # Only observed cells are read: a long grid is mostly empty.
    known = getattr(series, "cells", None)
    cells = known() if callable(known) else np.flatnonzero(observed)
    where = ObservedCells(
        np.zeros(len(cells), dtype=np.int64),
        cells,
        np.asarray(series.values, dtype=np.float64).reshape(-1)[cells],
        channels,
        np.array([steps]),
        np.array([float(series.start_s)]),
        np.array([float(series.rate_hz)]),
    )
    values, observed = series_statistics_of_cells(where)
    kept = series_observations_of_cells(where)[0] if keep_observations else None
    return SeriesStatistics(values[0], observed[0], observations=kept)


def series_observations_of_cells(where: ObservedCells) -> list[SeriesObservations]:
    """The measurements of each of F gridded series, oldest first (a cell's time is its centre)."""
    channels, steps, start_s, rate_hz = where.channels, where.steps, where.start_s, where.rate_hz
    order = np.lexsort((where.cells, where.owner))  # by series, then grid position: time ascending
    owner, cells, value = where.owner[order], where.cells[order], where.values[order]
    step, channel = np.divmod(cells, channels)
    end = (start_s + steps / rate_hz) / 3600.0
    hours = end[owner] - (start_s[owner] + (step + 0.5) / rate_hz[owner]) / 3600.0
    bounds = np.searchsorted(owner, np.arange(1, len(steps)))
    return [
        SeriesObservations(h.astype(np.float32), c.astype(np.int64), v.astype(np.float32))
        for h, c, v in zip(
            np.split(hours, bounds), np.split(channel, bounds), np.split(value, bounds), strict=True
        )
    ]


def series_statistics_of_cells(where: ObservedCells) -> tuple[np.ndarray, np.ndarray]:
    """:func:`series_statistics` of F gridded series at once, from their observed cells.

    Each statistic is computed from the same values in the same order as for the series alone, so
    the results are bit-identical to computing them one series at a time.

    Returns:
        ``values`` ``(F, C, S)`` float32 and ``observed`` ``(F, C, S)`` bool (see
        :class:`SeriesStatistics`).
    """
    channels, steps, start_s, rate_hz = where.channels, where.steps, where.start_s, where.rate_hz
    series, segments = len(steps), len(steps) * channels
    end = (start_s + steps / rate_hz) / 3600.0
    # Grouped by series and channel, time ascending.
    order = np.lexsort((where.cells, where.cells % channels, where.owner))
    owner, cells, value = where.owner[order], where.cells[order], where.values[order]
    step, channel = np.divmod(cells, channels)
    segment = owner * channels + channel
    hour = (start_s[owner] + (step + 0.5) / rate_hz[owner]) / 3600.0
    count = np.bincount(segment, minlength=segments)
    seen = count > 0
    start = (np.cumsum(count) - count)[seen]
    stop = start + count[seen] - 1
    first, last, low, high, since = (np.zeros(segments) for _ in range(5))
    if seen.any():
        first[seen], last[seen] = value[start], value[stop]
        low[seen] = np.minimum.reduceat(value, start)
        high[seen] = np.maximum.reduceat(value, start)
        since[seen] = np.repeat(end, channels)[seen] - hour[stop]
    divisor = np.maximum(count, 1)
    mean = np.bincount(segment, weights=value, minlength=segments) / divisor
    mean_hour = np.bincount(segment, weights=hour, minlength=segments) / divisor
    centred = hour - mean_hour[segment]
    spread = np.bincount(segment, weights=centred**2, minlength=segments)
    has_slope = (count >= 2) & (spread > 1e-12)
    moment = np.bincount(segment, weights=centred * (value - mean[segment]), minlength=segments)
    slope = np.where(has_slope, moment / np.maximum(spread, 1e-12), 0.0)
    stats = np.stack([first, last, low, high, mean, count, since, slope], axis=1)
    mask = np.repeat(seen[:, None], len(SERIES_STATISTICS), axis=1)
    mask[:, SLOPE] = has_slope
    stats = np.where(mask & np.isfinite(stats), stats, 0.0)
    shape = (series, channels, len(SERIES_STATISTICS))
    return stats.astype(np.float32).reshape(shape), (mask & np.isfinite(stats)).reshape(shape)
