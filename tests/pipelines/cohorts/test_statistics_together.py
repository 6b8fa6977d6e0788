"""A batch's PhysioNet 2012 files decoded together: each row then reads exactly what it would have
read alone, counted once, and a file changed in between is read afresh."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_schemas.cohort_spec import SensorModality
from encoders.readers import ReaderError
from pipelines.cohorts import statistics_together as together
from pipelines.cohorts.dataset import (
    SKIP_FAR_OUT,
    grid_statistics,
    grid_statistics_together,
    read_sensor_file,
    read_series_statistics,
    statistics_how,
)
from pipelines.cohorts.decoded_cache import content_sha256, process_cache
from pipelines.cohorts.statistics_together import decode_statistics_together
from tests.conftest import shared_file

MODALITY = SensorModality(
    kind="sensor",
    column="path",
    channels=["HR", "Temp", "Urine", "GCS", "Lactate", "MAP"],
    summed_channels=["Urine"],
    period_s=60.0,
    duration_s=172800.0,
)
STATS = {"mean": [80.0, 37.0, 100.0, 12.0, 2.0, 80.0], "std": [15.0, 1.0, 80.0, 3.0, 1.5, 12.0]}


@pytest.fixture
def stays(tmp_path: Path) -> list[Path]:
    """Twelve real stays, one of them twice, and three files no reader accepts."""
    folder = shared_file("physionet2012", "set-a")
    files = []
    for source in sorted(folder.glob("*.txt"))[:12]:
        files.append(tmp_path / source.name)
        shutil.copy(source, files[-1])
    (tmp_path / "no-header.txt").write_text("00:00,HR,70\n")
    (tmp_path / "no-channel.txt").write_text("Time,Parameter,Value\n00:00,Age,54\n")
    (tmp_path / "vitals.csv").write_text("time,HR\n0,70\n")
    return [*files, files[3], *(tmp_path / n for n in ("no-header.txt", "no-channel.txt", "vitals.csv"))]


def _read(path: Path):
    try:
        statistics = read_series_statistics(str(path), MODALITY, STATS)
    except ReaderError as error:
        return ("error", str(error))
    return statistics.values.tobytes(), statistics.observed.tobytes(), list(statistics.skipped.items())


@pytest.mark.realdata
def test_rows_read_after_decoding_together_get_what_they_read_alone(stays, monkeypatch):
    folder = process_cache().folder
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    alone = [_read(path) for path in stays]
    monkeypatch.setenv("DEEPWE_CACHE_DIR", str(folder))
    cache = process_cache()
    assert decode_statistics_together([str(p) for p in stays], MODALITY, STATS) == 12
    assert (cache.counts.hits, cache.counts.misses) == (0, 12)  # one read per distinct real stay
    assert [_read(path) for path in stays] == alone
    assert cache.counts.hits == 1  # the repeated stay; the others were taken from memory, uncounted
    assert decode_statistics_together([str(p) for p in stays], MODALITY, STATS) == 0  # all held now
    assert [_read(path) for path in stays] == alone


@pytest.mark.realdata
def test_a_file_changed_after_decoding_together_is_read_afresh(stays, monkeypatch):
    decode_statistics_together([str(stays[0])], MODALITY, STATS)
    text = stays[0].read_text()
    stays[0].write_text(text.replace(",HR,", ",Temp,"))
    changed = _read(stays[0])
    folder = process_cache().folder
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    assert changed == _read(stays[0])
    stays[0].write_text(text)
    assert changed != _read(stays[0])
    monkeypatch.setenv("DEEPWE_CACHE_DIR", str(folder))


def test_nothing_is_decoded_ahead_when_the_cache_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    path = tmp_path / "stay.txt"
    path.write_text("Time,Parameter,Value\n00:00,HR,70\n")
    assert decode_statistics_together([str(path)], MODALITY, STATS) == 0


@pytest.mark.realdata
@pytest.mark.parametrize("trajectory", [False, True], ids=["statistics", "with measurements"])
@pytest.mark.parametrize(
    "std", [STATS["std"], [1e-3, 1.0, 80.0, 1e-4, 1.5, 12.0]], ids=["usual", "far values"]
)
def test_statistics_of_grids_together_are_those_of_each_grid(stays, std, trajectory):
    stats = {"mean": STATS["mean"], "std": std, "trajectory": trajectory}
    arrays = [read_sensor_file(str(path), MODALITY) for path in stays[:12]]
    arrays.append(
        replace(
            arrays[0],
            values=np.zeros_like(arrays[0].values),
            observed=np.zeros_like(arrays[0].observed),
            observed_cells=None,
        )
    )
    together = grid_statistics_together(arrays, stats)
    for array, statistics in zip(arrays, together, strict=True):
        alone = grid_statistics(array, stats)
        assert statistics.values.tobytes() == alone.values.tobytes()
        assert statistics.observed.tobytes() == alone.observed.tobytes()
        assert list(statistics.skipped.items()) == list(alone.skipped.items())
        if not trajectory:
            assert statistics.observations is None and alone.observations is None
            continue
        kept, expected = statistics.observations, alone.observations
        for field in ("hours_before_end", "channel", "value"):
            assert getattr(kept, field).tobytes() == getattr(expected, field).tobytes(), field
        assert len(kept.value) == int(alone.values[:, 5].sum())  # every counted measurement
    assert any(SKIP_FAR_OUT in s.skipped for s in together) == (std is not STATS["std"])
    assert grid_statistics_together([], stats) == []


@pytest.mark.realdata
def test_a_large_file_is_left_to_its_row(stays, monkeypatch):
    big = stays[0]
    big.write_text(big.read_text() + "00:00,Age,54\n" * 80_000)  # over a megabyte
    assert decode_statistics_together([str(big), str(stays[1])], MODALITY, STATS) == 1
    assert not process_cache().holds(statistics_how(MODALITY, STATS), content_sha256(big))
    read = _read(big)
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    assert read == _read(big)


def test_a_failure_while_decoding_ahead_leaves_each_row_to_its_own_read(tmp_path, monkeypatch):
    def trips(*args, **kwargs):
        raise RuntimeError("an exotic file the shortcut cannot take")

    stay = tmp_path / "stay.txt"
    stay.write_text("Time,Parameter,Value\n00:00,HR,70\n01:00,HR,75\n")
    monkeypatch.setattr(together, "read_p12_together", trips)  # no real file trips it today
    assert decode_statistics_together([str(stay)], MODALITY, STATS) == 0
    assert process_cache().counts.misses == 0
    statistics = read_series_statistics(str(stay), MODALITY, STATS)
    assert statistics.values[0, :2].tolist() == [70.0, 75.0]  # HR first and last
