"""Series statistics kept in the decoded cache: a hit is bit-identical to computing them from the
file's grid, each file read counts once, and another training mean or std is another entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schemas.cohort_spec import SensorModality
from encoders.sensor_variables import series_statistics
from pipelines.cohorts.dataset import read_sensor_file, read_series_statistics, without_far_values
from pipelines.cohorts.decoded_cache import process_cache

CHANNELS = ["HR", "Temp", "Urine", "GCS", "Lactate"]
MODALITY = SensorModality(
    kind="sensor",
    column="path",
    channels=CHANNELS,
    summed_channels=["Urine"],
    period_s=60.0,
    duration_s=172800.0,
)
STATS = {"mean": [80.0, 37.0, 100.0, 12.0, 2.0], "std": [15.0, 1.0, 80.0, 3.0, 1.5]}


def _from_grid(path: Path, stats):
    array = without_far_values(read_sensor_file(str(path), MODALITY), stats)
    computed = series_statistics(array)
    return computed.values, computed.observed, dict(array.skipped)


def _same(statistics, expected) -> None:
    values, observed, skipped = expected
    assert statistics.values.dtype == values.dtype and statistics.values.tobytes() == values.tobytes()
    assert statistics.observed.tobytes() == observed.tobytes()
    assert list(statistics.skipped.items()) == list(skipped.items())


@pytest.mark.realdata
def test_a_statistics_hit_is_bit_identical_and_each_read_counts_once(p12_file):
    cache = process_cache()
    cold = read_series_statistics(str(p12_file), MODALITY, STATS)
    assert (cache.counts.hits, cache.counts.misses) == (
        0,
        1,
    )  # the grid's miss; the statistics' is not counted
    warm = read_series_statistics(str(p12_file), MODALITY, STATS)
    assert (cache.counts.hits, cache.counts.misses) == (1, 1)
    expected = _from_grid(p12_file, STATS)
    _same(cold, expected)
    _same(warm, expected)
    assert warm.skipped == {"line without 3 fields and a parameter name": 1}


@pytest.mark.realdata
def test_another_training_scale_or_a_changed_file_is_another_entry(p12_file):
    cache = process_cache()
    first = read_series_statistics(str(p12_file), MODALITY, STATS)
    narrow = {"mean": STATS["mean"], "std": [1e-4, *STATS["std"][1:]]}  # heart rates become far out
    other = read_series_statistics(str(p12_file), MODALITY, narrow)
    assert (cache.counts.hits, cache.counts.misses) == (1, 1)  # the grid was a hit
    _same(other, _from_grid(p12_file, narrow))
    assert other.values.tobytes() != first.values.tobytes()
    p12_file.write_text(p12_file.read_text().replace(",HR,", ",Temp,", 1))
    changed = read_series_statistics(str(p12_file), MODALITY, STATS)
    assert cache.counts.misses == 2
    _same(changed, _from_grid(p12_file, STATS))


def test_without_a_cache_the_statistics_are_computed_from_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    series = tmp_path / "vitals.csv"
    series.write_text("time,HR,Temp\n0,80,37.0\n3600,90,\n7200,,38.5\n")
    modality = SensorModality(kind="sensor", column="path", channels=["HR", "Temp"], period_s=60.0)
    stats = {"mean": [80.0, 37.0], "std": [10.0, 1.0]}
    first = read_series_statistics(str(series), modality, stats)
    np.testing.assert_array_equal(first.values[0, :2], [80.0, 90.0])  # first, last
    series.write_text("time,HR,Temp\n0,70,37.0\n")
    assert read_series_statistics(str(series), modality, stats).values[0, 0] == 70.0


@pytest.mark.realdata
def test_kept_measurements_round_trip_the_cache_and_are_an_entry_of_their_own(p12_file):
    cache = process_cache()
    without = read_series_statistics(str(p12_file), MODALITY, STATS)
    trajectory = STATS | {"trajectory": True}
    cold = read_series_statistics(str(p12_file), MODALITY, trajectory)
    warm = read_series_statistics(str(p12_file), MODALITY, trajectory)
    assert without.observations is None
    # Cold with measurements: a miss of its own entry, read from the cached grid (a hit); warm: a hit.
    assert (cache.counts.hits, cache.counts.misses) == (2, 1)
    expected = series_statistics(
        without_far_values(read_sensor_file(str(p12_file), MODALITY), STATS), keep_observations=True
    ).observations
    for got in (cold.observations, warm.observations):
        assert got is not None and expected is not None
        for field in ("hours_before_end", "channel", "value"):
            assert getattr(got, field).tobytes() == getattr(expected, field).tobytes(), field
