"""The rows of a run's chunks read through one DataLoader, so that its worker processes start once
per run, not once per chunk.

Each batch stays inside its chunk and starts where a chunk read alone would start one, so the
batches, and with them the predictions, are the ones of reading each chunk on its own. A worker
holds the rows of one chunk at a time: memory does not grow with the cohort.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset

from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import PatientCollator
from pipelines.common.parallelism import die_with_parent
from pipelines.inference.batching import PredictionCollate, PredictionDataset, prediction_dataset


class ChunksDataset(Dataset):
    """The rows of ``chunks`` (lists of 0-based table positions) one after another; a chunk's
    :class:`PredictionDataset` is made when its first row is read."""

    def __init__(self, bundle: Bundle, cohort: Cohort, chunks: Sequence[Sequence[int]]) -> None:
        self.bundle, self.cohort, self.chunks = bundle, cohort, [list(c) for c in chunks]
        self.starts = np.cumsum([0, *(len(c) for c in self.chunks)])
        self._open: tuple[int, PredictionDataset] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _chunk(self, index: int) -> tuple[PredictionDataset, int]:
        """The dataset of the chunk holding row ``index``, and the index of that chunk's first row."""
        number = int(np.searchsorted(self.starts, index, side="right")) - 1
        if self._open is None or self._open[0] != number:
            self._open = (number, prediction_dataset(self.bundle, self.cohort, self.chunks[number]))
        return self._open[1], int(self.starts[number])

    def __getitem__(self, index: int):
        dataset, start = self._chunk(index)
        return dataset[index - start]

    def __getitems__(self, indices: Sequence[int]):
        """A batch, all of whose rows lie in one chunk (see :func:`chunk_batches`)."""
        dataset, start = self._chunk(indices[0])
        return dataset.__getitems__([index - start for index in indices])


def chunk_batches(sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of dataset indices over chunks of these ``sizes``: ``batch_size`` rows at a time from
    each chunk's start, the last batch of a chunk shorter."""
    batches, start = [], 0
    for size in sizes:
        batches += [
            list(range(start + b, start + min(b + batch_size, size))) for b in range(0, size, batch_size)
        ]
        start += size
    return batches


def chunks_loader(
    bundle: Bundle, cohort: Cohort, chunks: Sequence[Sequence[int]], *, batch_size: int, num_workers: int
) -> tuple[DataLoader, PatientCollator]:
    """Batches ``(samples, input sha256s, out-of-range variables)`` of every row of ``chunks``, in
    order, never two chunks in one batch; and the collator that makes a model batch of samples."""
    dataset = ChunksDataset(bundle, cohort, chunks)
    collate = PredictionCollate(bundle.model.encoders)
    batches = chunk_batches([len(c) for c in dataset.chunks], batch_size)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=die_with_parent(),
    )
    return loader, collate.patients
