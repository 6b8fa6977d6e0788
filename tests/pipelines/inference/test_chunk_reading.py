"""One DataLoader over a run's chunks: batches never cross a chunk, the output is that of predicting
each chunk alone, and a worker holds one chunk's rows at a time."""

from __future__ import annotations

import pytest

from pipelines.cohorts.cohort_table import load_cohort
from pipelines.inference.batching import PredictOptions
from pipelines.inference.chunk_reading import ChunksDataset, chunk_batches
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import LocalEngine, chunk_job, predict_chunk


def test_batches_start_at_each_chunk_and_never_cross_one():
    assert chunk_batches([5, 3, 7], 3) == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9, 10], [11, 12, 13], [14]]
    assert chunk_batches([], 4) == []


def test_the_dataset_reads_each_chunk_with_its_own_rows_one_chunk_at_a_time(bundle, cohort_60):
    cohort = load_cohort(cohort_60)
    dataset = ChunksDataset(bundle, cohort, [[4, 9, 2], [30, 31]])
    assert len(dataset) == 5
    rows = [sample.row for sample, _, _ in dataset.__getitems__([3, 4])]
    assert rows == [31, 32] and dataset._open is not None and dataset._open[0] == 1
    assert [sample.row for sample, _, _ in dataset.__getitems__([0, 1, 2])] == [5, 10, 3]
    assert dataset._open[0] == 0 and dataset[4][0].row == 32 and dataset._open[0] == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_local_engine_output_equals_predicting_each_chunk_alone(bundle, cohort_60, tmp_path, workers):
    options = PredictOptions(chunk_size=13, batch_size=5, num_workers=workers)
    cohort = load_cohort(cohort_60)
    together = chunk_job(bundle, cohort, options, tmp_path / "together")
    alone = chunk_job(bundle, cohort, options, tmp_path / "alone")
    for job in (together, alone):
        job.partial.mkdir()
    numbers = [0, 2, 3, 4]  # chunk 1 finished before: a resumed run
    records = list(LocalEngine().predict_chunks(together, numbers))
    assert [len(r) for r in records] == [len(together.chunks[n]) for n in numbers]
    for number, chunk_records in zip(numbers, records, strict=True):
        expected = predict_chunk(alone, number)
        assert [r.model_dump() for r in chunk_records] == [r.model_dump() for r in expected]
        written = read_predictions(together.part(number))
        assert written.equals(read_predictions(alone.part(number)))
