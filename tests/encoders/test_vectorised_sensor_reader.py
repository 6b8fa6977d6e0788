"""The whole-file sensor readers give what a plain line-by-line reader gives, on real files.

The reference below reads line by line and grids channel by channel, the simplest reading of the
format's rules; the readers under test parse whole files with Arrow and grid with one numpy pass.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from encoders.readers.sensor_files import _EDGE_EPS, read_sensor
from encoders.readers.tabular_files import FLOAT32_MAX
from pipelines.sources.synth_files import VITAL_CHANNELS, write_vitals
from tests.conftest import shared_file

HOUR = 3600.0
P12_CHANNELS = ("HR", "Temp", "Urine", "Lactate", "GCS", "MAP", "Weight", "pH")
_CLOCK = re.compile(r"(\d+):([0-5]\d)")


def _line_by_line_p12(path: Path, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(times_s (N,), values (N, C), skipped)`` of a PhysioNet 2012 file, one line at a time."""
    times, rows, skipped = [], [], {}
    for line in path.read_text(encoding="utf-8-sig").splitlines()[1:]:
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 3 or not fields[1]:
            skipped["line without 3 fields and a parameter name"] = skipped.get("line without 3 fields and a parameter name", 0) + 1  # fmt: skip
            continue
        clock = _CLOCK.fullmatch(fields[0])
        if clock is None:
            skipped["line whose time is not HH:MM"] = skipped.get("line whose time is not HH:MM", 0) + 1
            continue
        try:
            value = float(fields[2])
        except ValueError:
            value = math.nan
        if not abs(value) <= FLOAT32_MAX:
            skipped["line whose value is not a finite number"] = skipped.get("line whose value is not a finite number", 0) + 1  # fmt: skip
            continue
        times.append((int(clock[1]) * 60 + int(clock[2])) * 60.0)
        row = [math.nan] * len(channels)
        if fields[1] in channels and value != -1:
            row[channels.index(fields[1])] = value
        rows.append(row)
    return np.asarray(times), np.asarray(rows, dtype=np.float64), skipped


def _grid_channel_by_channel(times_s, samples, rate_hz, n_cells, summed=()):
    """``(values, observed)`` of shape ``(n_cells, C)``: each channel averaged (or summed) per cell."""
    cells = np.floor(times_s * rate_hz + _EDGE_EPS).astype(np.int64)
    values = np.zeros((n_cells, samples.shape[1]), dtype=np.float32)
    observed = np.zeros((n_cells, samples.shape[1]), dtype=bool)
    for c in range(samples.shape[1]):
        total, count = np.zeros(n_cells), np.zeros(n_cells)
        for cell, sample in zip(cells, samples[:, c], strict=True):
            if 0 <= cell < n_cells and not np.isnan(sample):
                total[cell] += sample
                count[cell] += 1
        observed[:, c] = count > 0
        divisor = np.ones(n_cells) if c in summed else np.maximum(count, 1)
        values[:, c] = np.where(count > 0, total / divisor, 0.0)
    return values, observed


def _p12_files() -> list[Path]:
    folder = shared_file("physionet2012", "set-a")
    files = sorted(folder.glob("*.txt"))
    return files[:: max(1, len(files) // 60)]  # about 60 stays spread over the set


@pytest.mark.realdata
def test_p12_whole_file_reader_matches_line_by_line_reading_on_real_stays():
    files = _p12_files()
    assert len(files) >= 50
    summed = (P12_CHANNELS.index("Urine"),)
    for path in files:
        array = read_sensor(
            path, channels=P12_CHANNELS, rate_hz=1 / HOUR, duration_s=48 * HOUR, summed=["Urine"]
        )
        times, samples, skipped = _line_by_line_p12(path, P12_CHANNELS)
        values, observed = _grid_channel_by_channel(times, samples, 1 / HOUR, 48, summed)
        np.testing.assert_array_equal(array.observed, observed, err_msg=str(path))
        np.testing.assert_allclose(array.values, values, rtol=1e-6, err_msg=str(path))
        assert dict(array.skipped) == skipped


@pytest.mark.realdata
def test_p12_whole_file_reader_matches_line_by_line_reading_on_broken_lines(tmp_path):
    real = shared_file("physionet2012", "set-a", "132540.txt").read_text().splitlines()
    bad = ["x", "1:2:3,HR,4", "٣:00,HR,71", "05:00,HR,1_000", " 06:00 , HR , +8e1 ", "07:00,HR,inf", "", "  "]
    broken = tmp_path / "132540.txt"
    broken.write_text("\n".join([*real[:40], *bad, *real[40:]]) + "\r\n")
    array = read_sensor(broken, channels=P12_CHANNELS, rate_hz=1 / HOUR, duration_s=48 * HOUR)
    times, samples, skipped = _line_by_line_p12(broken, P12_CHANNELS)
    values, observed = _grid_channel_by_channel(times, samples, 1 / HOUR, 48)
    np.testing.assert_array_equal(array.observed, observed)
    np.testing.assert_allclose(array.values, values, rtol=1e-6)
    assert dict(array.skipped) == skipped and sum(skipped.values()) == 3
    assert list(array.skipped) == list(skipped)  # reasons in the order they first occur


@pytest.mark.realdata
def test_wfdb_grid_matches_channel_by_channel_gridding_on_real_ecg():
    import wfdb

    for record in ("A00001", "A00002", "A00003"):
        header = shared_file("cinc2017", f"{record}.hea")
        array = read_sensor(header, channels=["ECG"], rate_hz=50.0)
        signal = wfdb.rdrecord(str(header.with_suffix(""))).p_signal
        fs = wfdb.rdheader(str(header.with_suffix(""))).fs
        values, observed = _grid_channel_by_channel(
            np.arange(signal.shape[0]) / fs, signal.astype(np.float64), 50.0, array.values.shape[0]
        )
        np.testing.assert_array_equal(array.observed, observed)
        np.testing.assert_allclose(array.values, values, rtol=1e-5, atol=1e-6)


def test_csv_grid_matches_channel_by_channel_gridding_on_synthetic_vitals(tmp_path):
    rng = np.random.default_rng(3)
    for k in range(5):
        path = tmp_path / f"vitals-{k}.csv"
        write_vitals(path, severity=k / 2, rng=rng)
        array = read_sensor(
            path, channels=VITAL_CHANNELS, rate_hz=2 / HOUR, time_unit="h", duration_s=24 * HOUR
        )
        lines = [line.split(",") for line in path.read_text().splitlines()[1:]]
        times = np.array([float(cells[0]) * HOUR for cells in lines])
        samples = np.array([[float(cell) if cell else np.nan for cell in cells[1:]] for cells in lines])
        values, observed = _grid_channel_by_channel(times, samples, 2 / HOUR, 48)
        np.testing.assert_array_equal(array.observed, observed)
        np.testing.assert_allclose(array.values, values, rtol=1e-6)


@pytest.mark.realdata
def test_series_statistics_from_known_cells_match_a_dense_reading():
    from dataclasses import replace

    from encoders.sensor_variables import SERIES_STATISTICS, series_statistics

    for path in _p12_files()[:20]:
        array = read_sensor(path, channels=P12_CHANNELS, rate_hz=1 / 60, duration_s=48 * HOUR)
        assert array.observed_cells is not None
        fast, dense = series_statistics(array), series_statistics(replace(array, observed_cells=None))
        np.testing.assert_array_equal(fast.values, dense.values)
        np.testing.assert_array_equal(fast.observed, dense.observed)
        for c in range(len(P12_CHANNELS)):  # first, last, min, max, mean, count by plain numpy
            seen = array.values[array.observed[:, c], c].astype(np.float64)
            if seen.size:
                expected = [seen[0], seen[-1], seen.min(), seen.max(), seen.mean(), seen.size]
                np.testing.assert_allclose(fast.values[c, :6], expected, rtol=1e-6)
            assert fast.observed[c, : SERIES_STATISTICS.index("count") + 1].all() == bool(seen.size)
