"""The graph reads neighbours' outcomes, never a patient's own; an ensemble averages its members."""

from __future__ import annotations

from dataclasses import replace

import torch

from deepwe_mm import DeepWe, DeepWeEnsemble
from tests.deepwe_mm import BATCH, TINY, make_batch


def _reference_model(config=TINY) -> tuple[DeepWe, tuple]:
    model = DeepWe(config).eval()
    data = make_batch()
    reference = make_batch(seed=1)
    with torch.no_grad():
        model.set_reference(model.embed(*reference), outcomes=torch.zeros(BATCH, dtype=torch.long))
    return model, data


def test_predictions_read_the_reference_outcomes_only_when_asked_to() -> None:
    model, data = _reference_model()
    with torch.no_grad():
        model.graph.outcome.weight.normal_()
        before = model(*data).logits
        model.reference_outcomes = torch.ones(BATCH, dtype=torch.long, device=before.device)
        after = model(*data).logits
    assert not torch.allclose(before, after)

    plain, data = _reference_model(replace(TINY, graph_outcomes=False))
    with torch.no_grad():
        before = plain(*data).logits
        plain.reference_outcomes = torch.ones(BATCH, dtype=torch.long)
        assert torch.equal(before, plain(*data).logits)


def test_in_training_a_patient_stored_earlier_is_not_its_own_neighbour() -> None:
    model = DeepWe(replace(TINY, modality_dropout=0.0, memory_size=64)).train()
    data = make_batch()
    labels = torch.arange(BATCH) % 3
    ids = torch.arange(BATCH)
    model(*data, labels=labels, ids=ids)  # stores the batch in the memory bank
    output = model(*data, labels=labels, ids=ids)  # the same patients again
    stored = model.memory.count - BATCH  # rows before this batch was pushed: all from the first call
    assert stored == BATCH
    own_earlier_row = ids  # patient i was stored in row i
    assert not (output.neighbours == own_earlier_row[:, None]).any()
    assert not (output.neighbours == (stored + ids)[:, None]).any()  # nor itself in the batch


def test_an_ensemble_of_one_is_its_member_and_of_two_averages_logits() -> None:
    data = make_batch()
    members = [DeepWe(TINY).eval() for _ in range(2)]
    single = DeepWeEnsemble(members[:1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(single(*data).logits, members[0](*data).logits)
        wide = {m: torch.cat([v, v], dim=-1) for m, v in data[0].items()}
        both = DeepWeEnsemble(members).eval()
        output = both(wide, *data[1:])
        expected = (members[0](*data).logits + members[1](*data).logits) / 2
        torch.testing.assert_close(output.logits, expected)
        absent = ~output.modality_present
        assert (output.modality_weights[absent] == 0).all()
        assert both.embed(wide, *data[1:]).shape == (BATCH, 2 * TINY.hidden_dim)
