"""Decoded files kept in memory inside ``keep_decoded_files`` and only there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.sensor_variables import SeriesStatistics
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.decoded_cache import decoded as remembered
from pipelines.cohorts.decoded_cache import keep_decoded_files
from pipelines.cohorts.prepare import prepare_cohort
from pipelines.cohorts.validate import validate_cohort


def test_remembered_reads_once_inside_the_block_and_every_time_outside():
    calls: list[str] = []

    def read(path: str) -> str:
        calls.append(path)
        return path.upper()

    assert remembered("kind", "a", read) == "A"
    assert remembered("kind", "a", read) == "A"
    assert calls == ["a", "a"]
    with keep_decoded_files() as kept:
        assert remembered("kind", "a", read) == "A"
        assert remembered("kind", "a", read) == "A"
        assert remembered("other", "a", read) == "A"  # read another way: a separate entry
        with keep_decoded_files() as inner:
            assert inner is kept
            remembered("kind", "a", read)
    assert calls == ["a", "a", "a", "a"]
    assert kept == {("kind", "a"): "A", ("other", "a"): "A"}
    remembered("kind", "a", read)
    assert len(calls) == 5


def test_a_failed_read_is_not_kept():
    def broken(path: str) -> str:
        raise ValueError(f"{path} is broken")

    with keep_decoded_files() as kept:
        for _ in range(2):
            with pytest.raises(ValueError, match="broken"):
                remembered("kind", "f", broken)
        assert kept == {}


def test_a_dataset_reads_its_files_once_inside_the_block(editable_cohort: Path):
    cohort = load_cohort(editable_cohort / "cohort.yaml")
    dataset = prepare_cohort(cohort, text_cache=str(editable_cohort / ".text-cache")).dataset()
    files = [{m: p for m, p in r.paths.items() if p is not None} for r in dataset.records]
    index = next(i for i, paths in enumerate(files) if len(paths) >= 3)
    with keep_decoded_files():
        first = dataset[index]
        for path in files[index].values():
            Path(path).unlink()  # gone from disk: only the kept copies can answer now
        again = dataset[index]
    assert not first.errors and not again.errors
    for name in files[index]:
        kept, read = again.inputs[name], first.inputs[name]
        if isinstance(read, str):
            assert kept == read
        else:  # an image array, an audio waveform or a sensor grid
            np.testing.assert_array_equal(
                np.asarray(getattr(kept, "values", kept)), getattr(read, "values", read)
            )
    outside = dataset[index]
    # A training dataset keeps each file's series statistics itself (read once, not every epoch).
    own = {name for name in files[index] if isinstance(first.inputs[name], SeriesStatistics)}
    assert own == {"vitals"}
    assert set(outside.errors) == set(files[index]) - own
    assert all(outside.inputs[name] is None for name in set(files[index]) - own)


def test_validation_checks_each_file_header_once_inside_the_block(editable_cohort: Path):
    spec = editable_cohort / "cohort.yaml"
    with keep_decoded_files():
        assert validate_cohort(spec).ok
        audio = sorted(editable_cohort.rglob("*.wav"))
        audio[0].write_bytes(b"not a wav")  # rewritten inside the block: the kept check still answers
        assert validate_cohort(spec).ok
    problems = validate_cohort(spec).problems
    assert any(audio[0].name in str(problem) for problem in problems), problems
