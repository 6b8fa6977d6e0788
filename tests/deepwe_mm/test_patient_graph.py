"""The patient graph's neighbour pools: reference cohort, memory bank, rest of the batch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepwe_mm import DeepWe, MemoryBank
from tests.deepwe_mm import BATCH, TINY, make_batch


def test_reference_neighbours_are_its_nearest_rows_and_are_stored_outside_the_state_dict() -> None:
    model = DeepWe(TINY).eval()
    data = make_batch()
    with torch.no_grad():
        fused = model.embed(*data)
    # The reference holds the batch itself: a patient's own row is identical, so it is taken to be
    # the patient and skipped (a training patient must not read its own outcome); the first
    # neighbour is the nearest other row.
    model.set_reference(fused, ids=[f"p{i}" for i in range(BATCH)], outcomes=torch.arange(BATCH) % 2)
    output = model(*data)
    similarity = torch.nn.functional.normalize(fused, dim=1) @ torch.nn.functional.normalize(fused, dim=1).T
    similarity.fill_diagonal_(-2)
    assert not (output.neighbours == torch.arange(BATCH)[:, None]).any()
    assert torch.equal(output.neighbours[:, 0], similarity.argmax(1))
    assert model.reference.ids[3] == "p3" and model.reference.outcomes.shape == (BATCH,)
    assert not any(key.startswith("reference") for key in model.state_dict())
    model.clear_reference()
    assert model.reference is None and model(*data).neighbours is None  # empty memory: no pool


@pytest.mark.parametrize(
    ("embeddings", "ids", "message"),
    [
        (torch.randn(4, 35), None, r"must be \(R, 36\)"),
        (torch.full((4, 36), float("nan")), None, "finite"),
        (torch.randn(3, 36), ["a", "b", "a"], "unique"),
    ],
)
def test_bad_reference_is_refused(embeddings: torch.Tensor, ids, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeepWe(TINY).set_reference(embeddings, ids=ids)


def test_in_training_a_patient_is_never_its_own_neighbour_and_the_memory_fills() -> None:
    model = DeepWe(replace(TINY, memory_size=0)).train()
    output = model(*make_batch())
    assert output.neighbours.shape == (BATCH, 5)
    assert not (output.neighbours == torch.arange(BATCH)[:, None]).any()
    assert model.memory is None
    model = DeepWe(TINY).train()
    model(*make_batch())
    assert model.memory.count == BATCH
    output = model(*make_batch(seed=1))  # pool: 13 memory rows, then the 13 batch rows
    assert model.memory.count == 17
    assert not (output.neighbours == BATCH + torch.arange(BATCH)[:, None]).any()
    assert int(output.neighbours.max()) < 2 * BATCH


def test_memory_bank_is_a_ring_that_keeps_the_newest_rows() -> None:
    bank = MemoryBank(5, 2)
    bank.push(torch.arange(6.0).view(3, 2))
    bank.push(torch.arange(6.0, 14.0).view(4, 2))
    assert bank.count == 5
    kept = {tuple(row.tolist()) for row in bank.contents()}
    assert kept == {(4.0, 5.0), (6.0, 7.0), (8.0, 9.0), (10.0, 11.0), (12.0, 13.0)}
    bank.push(torch.arange(20.0).view(10, 2))  # more rows than slots: the last 5
    assert {tuple(row.tolist()) for row in bank.contents()} == {
        (float(2 * i), float(2 * i + 1)) for i in range(5, 10)
    }
    bank.clear()
    assert bank.contents().shape == (0, 2)
