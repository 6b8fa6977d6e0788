"""The persistent decoded cache: exact round trips, misses on change, damage detected, safe writers."""

from __future__ import annotations

import multiprocessing
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from encoders.readers import ReaderError, read_sensor
from pipelines.cli import app
from pipelines.cohorts.decoded_cache import DecodedCache, content_sha256, decoded, process_cache
from pipelines.inference.batching import PredictOptions
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import predict_cohort
from tests.conftest import shared_file

HOUR = 3600.0
CHANNELS = ("HR", "Temp", "Urine", "GCS")


def _read_p12(path: str):
    return read_sensor(path, channels=CHANNELS, rate_hz=1 / 60, duration_s=48 * HOUR, summed=["Urine"])


def _assert_same_array(a, b) -> None:
    assert a.values.dtype == b.values.dtype and a.values.tobytes() == b.values.tobytes()
    assert a.observed.tobytes() == b.observed.tobytes()
    assert (a.channels, a.rate_hz, a.start_s, dict(a.skipped)) == (
        b.channels,
        b.rate_hz,
        b.start_s,
        dict(b.skipped),
    )


@pytest.mark.realdata
def test_a_hit_is_bit_identical_to_decoding_the_file(tmp_path, p12_file):
    cache = DecodedCache(tmp_path / "cache")
    fresh = cache.get_or_decode("p12", p12_file, _read_p12)
    again = cache.get_or_decode("p12", p12_file, _read_p12)
    assert (cache.counts.hits, cache.counts.misses) == (1, 1)
    _assert_same_array(fresh, _read_p12(str(p12_file)))
    _assert_same_array(again, fresh)
    assert dict(again.skipped) == {"line without 3 fields and a parameter name": 1}


@pytest.mark.realdata
def test_a_dense_ecg_grid_round_trips_exactly(tmp_path):
    header = shared_file("cinc2017", "A00001.hea")
    cache = DecodedCache(tmp_path / "cache")

    def read(path: str):
        return read_sensor(path, channels=["ECG"], rate_hz=300.0)

    first = cache.get_or_decode("ecg", header, read)
    _assert_same_array(cache.get_or_decode("ecg", header, read), first)
    assert cache.counts.hits == 1


def test_text_and_arrays_round_trip_and_other_values_are_not_stored(tmp_path):
    cache = DecodedCache(tmp_path / "cache")
    note = tmp_path / "note.txt"
    note.write_text("Pt stable. Lactate 2.1 → 1.4\n")
    for how, read in (
        ("text", lambda p: Path(p).read_text()),
        ("array", lambda p: np.frombuffer(Path(p).read_bytes(), dtype=np.uint8).astype(np.float16)),
        ("other", lambda p: {"not": "storable"}),
    ):
        first = cache.get_or_decode(how, note, read)
        second = cache.get_or_decode(how, note, read)
        assert type(second) is type(first)
        if isinstance(first, np.ndarray):
            assert second.dtype == first.dtype and second.tobytes() == first.tobytes()
        else:
            assert second == first
    assert (cache.counts.hits, cache.counts.misses) == (2, 4)


@pytest.mark.realdata
def test_a_changed_file_or_reader_setting_is_a_miss(tmp_path, p12_file):
    cache = DecodedCache(tmp_path / "cache")
    before = cache.get_or_decode("p12", p12_file, _read_p12)
    p12_file.write_text(p12_file.read_text().replace(",HR,", ",Temp,", 1))
    after = cache.get_or_decode("p12", p12_file, _read_p12)
    assert cache.counts.misses == 2 and cache.counts.hits == 0
    assert not np.array_equal(before.observed, after.observed)
    _assert_same_array(after, _read_p12(str(p12_file)))
    cache.get_or_decode(("p12", "hourly"), p12_file, _read_p12)  # other settings: another entry
    assert cache.counts.misses == 3


@pytest.mark.realdata
@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty"])
def test_a_damaged_entry_is_detected_and_decoded_again(tmp_path, p12_file, damage):
    cache = DecodedCache(tmp_path / "cache")
    first = cache.get_or_decode("p12", p12_file, _read_p12)
    entry = cache.entry(cache.key("p12", content_sha256(p12_file)))
    blob = bytearray(entry.read_bytes())
    if damage == "flip a byte":
        blob[-3] ^= 0x40  # inside the last array's bytes: safetensors alone would not notice
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray()
    entry.write_bytes(bytes(blob))
    again = cache.get_or_decode("p12", p12_file, _read_p12)
    _assert_same_array(again, first)
    assert (cache.counts.corrupt, cache.counts.misses, cache.counts.hits) == (1, 2, 0)
    cache.get_or_decode("p12", p12_file, _read_p12)  # the entry was written again, whole
    assert cache.counts.hits == 1


def test_a_failed_read_is_not_stored_and_fails_the_same_way_again(tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_text("not a PhysioNet file\n")
    cache = DecodedCache(tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(ReaderError, match="expected a first line"):
            cache.get_or_decode("p12", broken, _read_p12)
    assert cache.size_bytes() == 0
    with pytest.raises(ReaderError, match="no such file"):
        cache.get_or_decode("p12", tmp_path / "absent.txt", _read_p12)


def test_size_stays_bounded_and_the_least_recently_used_go_first(tmp_path):
    cache = DecodedCache(tmp_path / "cache", max_bytes=60_000)
    files = []
    for k in range(12):
        files.append(tmp_path / f"f{k}.bin")
        files[-1].write_bytes(bytes([k]) * 8_000)

    def read(path: str) -> np.ndarray:
        return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8).copy()

    for k, path in enumerate(files):
        cache.get_or_decode("raw", path, read)
        if k >= 1:
            cache.get_or_decode("raw", files[0], read)  # the first file stays in use
    cache.evict()
    assert cache.size_bytes() <= 60_000
    kept = {path.name for path in files if cache.entry(cache.key("raw", content_sha256(path))).is_file()}
    assert "f0.bin" in kept and "f1.bin" not in kept and "f11.bin" in kept


def _write_same_entry(folder: str, path: str, rounds: int) -> None:
    cache = DecodedCache(folder)
    for _ in range(rounds):
        cache.entry(cache.key("p12", content_sha256(path))).unlink(missing_ok=True)
        cache.get_or_decode("p12", path, _read_p12)


@pytest.mark.realdata
def test_two_processes_writing_the_same_entry_leave_one_valid_entry(tmp_path, p12_file):
    folder = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_write_same_entry, args=(str(folder), str(p12_file), 40)) for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    files = sorted(p.name for p in (folder / "decoded").rglob("*") if p.is_file())
    assert len(files) == 1 and not files[0].startswith(".tmp-")
    cache = DecodedCache(folder)
    _assert_same_array(cache.get_or_decode("p12", p12_file, _read_p12), _read_p12(str(p12_file)))
    assert (cache.counts.hits, cache.counts.corrupt) == (1, 0)


def test_cold_and_warm_predictions_are_bit_identical(bundle, cohort_60, tmp_path):
    cache = process_cache()
    options = PredictOptions(chunk_size=16)
    predict_cohort(bundle, cohort_60, tmp_path / "cold.parquet", options, progress=False)
    cold_misses, cold_hits = cache.counts.misses, cache.counts.hits
    predict_cohort(bundle, cohort_60, tmp_path / "warm.parquet", options, progress=False)
    assert cold_misses > 0 and cold_hits == 0
    assert cache.counts.hits == cold_misses and cache.counts.misses == cold_misses
    cold, warm = read_predictions(tmp_path / "cold.parquet"), read_predictions(tmp_path / "warm.parquet")
    assert cold["risk"].tolist() == warm["risk"].tolist()
    assert cold["probabilities"].map(list).tolist() == warm["probabilities"].map(list).tolist()


def test_cache_off_reads_the_file_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPWE_CACHE_DIR", "off")
    note = tmp_path / "note.txt"
    note.write_text("a")
    assert decoded("text", str(note), lambda p: Path(p).read_text()) == "a"
    note.write_text("b")
    assert decoded("text", str(note), lambda p: Path(p).read_text()) == "b"
    assert process_cache() is None


def test_cache_clear_command_empties_the_folder_named_by_cache_dir(tmp_path):
    folder = tmp_path / "my-cache"
    note = tmp_path / "note.txt"
    note.write_text("kept")
    DecodedCache(folder).get_or_decode("text", note, lambda p: Path(p).read_text())
    assert DecodedCache(folder).size_bytes() > 0
    result = CliRunner().invoke(app, ["--cache-dir", str(folder), "cache", "clear"])
    assert result.exit_code == 0, result.output
    assert "removed 1 decoded files" in result.output
    assert DecodedCache(folder).size_bytes() == 0
    info = CliRunner().invoke(app, ["--cache-dir", str(folder), "cache", "info"])
    assert info.exit_code == 0 and f"{folder}: 0.0 MB of at most" in info.output.replace("\n", "")
    off = CliRunner().invoke(app, ["--cache-dir", "off", "cache", "clear"])
    assert off.exit_code == 0 and "cache is off" in off.output
    shutil.rmtree(folder)


def _reads(output: str) -> tuple[int, int]:
    """(reads, hits) from a training summary."""
    found = re.search(r"decoded files: (\d+) reads, (\d+) from the cache \(\d+% hit rate\)", output)
    assert found is not None, output
    return int(found[1]), int(found[2])


def test_training_decodes_each_file_once_and_reports_the_hit_rate(cohort_60, tmp_path):
    from pipelines.cli.demo import DEMO_CONFIG
    from pipelines.cohorts.cohort_table import load_cohort

    cohort = load_cohort(cohort_60)
    files = {p for r in cohort.records() for p in r.paths.values() if p is not None}
    arguments = [
        "train",
        str(cohort_60),
        "--config",
        str(DEMO_CONFIG.with_name("tiny.yaml")),
        "--device",
        "cpu",
    ]
    cold = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "m1")])
    assert cold.exit_code == 0, cold.output
    reads, hits = _reads(cold.output)
    assert reads - hits == len(files) > 0  # every file decoded once, then served from the cache
    warm = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "m2")])
    reads, hits = _reads(warm.output)
    assert hits == reads > 0


def test_entries_are_private_and_still_stored_after_the_folder_was_removed(tmp_path):
    cache = DecodedCache(tmp_path / "cache")
    note = tmp_path / "note.txt"
    note.write_text("Lactate 2.1")
    cache.get_or_decode("text", note, lambda p: Path(p).read_text())
    entry = cache.entry(cache.key("text", content_sha256(note)))
    assert entry.stat().st_mode & 0o777 == 0o600  # decoded files hold patient data
    shutil.rmtree(tmp_path / "cache")  # `deepwe cache clear` or a user, while this process runs
    cache.get_or_decode("text", note, lambda p: Path(p).read_text())
    assert entry.is_file() and not list(entry.parent.glob(".tmp-*"))


def test_a_file_rewritten_with_the_same_size_and_times_is_hashed_again(tmp_path) -> None:
    import hashlib
    import os

    path = tmp_path / "series.csv"
    path.write_bytes(b"Time,Parameter,Value\n00:00,HR,80\n")
    first = content_sha256(path)
    assert content_sha256(path) == first == hashlib.sha256(path.read_bytes()).hexdigest()
    times = os.stat(path)
    path.write_bytes(b"Time,Parameter,Value\n00:00,HR,90\n")  # same size
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))  # same modification time
    assert content_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first
    assert content_sha256(tmp_path) is None


def test_bytes_read_with_their_hash_serve_later_hash_lookups_until_the_file_changes(tmp_path) -> None:
    import hashlib

    from pipelines.cohorts.decoded_cache import file_bytes_and_sha256

    path = tmp_path / "stay.txt"
    path.write_bytes(b"Time,Parameter,Value\n00:00,HR,80\n")
    data, digest = file_bytes_and_sha256(path)
    assert data == path.read_bytes() and digest == hashlib.sha256(data).hexdigest() == content_sha256(path)
    path.write_bytes(b"Time,Parameter,Value\n00:00,HR,91\n")
    assert content_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != digest
    with pytest.raises(OSError):
        file_bytes_and_sha256(tmp_path)
