"""Feature gates: weights per token, exactly 0 off the mask, gated tokens moved towards a baseline."""

from __future__ import annotations

import pytest
import torch

from deepwe_mm import FeatureGate


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    valid = torch.rand(13, 9) < 0.6
    valid[:, 0] = True
    valid[4] = False  # a row with nothing observed (an absent modality)
    values = torch.where(valid.unsqueeze(-1), torch.randn(13, 9, 11), 0.0)
    return values, valid


@pytest.mark.parametrize("kind", ["sigmoid", "sparsemax"])
def test_a_gated_token_moves_from_its_value_towards_the_baseline(kind: str) -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, kind)
    with torch.no_grad():
        gate.baseline.normal_()
    weights, gated = gate(values, valid)
    assert weights.shape == (13, 9) and gated.shape == (13, 9, 11)
    assert (weights[~valid] == 0).all()
    assert (gated[~valid] == 0).all()
    w = weights[valid].unsqueeze(-1)
    torch.testing.assert_close(gated[valid], w * values[valid] + (1 - w) * gate.baseline)


def test_without_a_gate_every_observed_token_passes_unchanged() -> None:
    values, valid = _tokens()
    weights, gated = FeatureGate(11, 17, None)(values, valid)
    assert torch.equal(weights, valid.float())
    assert torch.equal(gated, values)


def test_a_gate_with_context_weighs_a_token_by_the_rest_of_the_patient() -> None:
    values, valid = _tokens()
    changed = values.clone()
    changed[0, 1:] = torch.where(valid[0, 1:].unsqueeze(-1), torch.randn(8, 11), 0.0)
    torch.manual_seed(0)
    with_context = FeatureGate(11, 17, "sigmoid", context=True)
    torch.manual_seed(0)
    alone = FeatureGate(11, 17, "sigmoid", context=False)
    assert with_context.weights(values, valid)[0, 0] != with_context.weights(changed, valid)[0, 0]
    assert alone.weights(values, valid)[0, 0] == alone.weights(changed, valid)[0, 0]


def test_sigmoid_weights_lie_strictly_between_zero_and_one() -> None:
    values, valid = _tokens()
    weights = FeatureGate(11, 17, "sigmoid").weights(values, valid)
    assert ((weights[valid] > 0) & (weights[valid] < 1)).all()


def test_sparsemax_weights_peak_at_one_and_can_be_exactly_zero() -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, "sparsemax")
    with torch.no_grad():  # spread the scores so that sparsemax cuts some tokens off
        gate.score[-1].weight.mul_(20)
    weights = gate.weights(values, valid)
    assert ((weights >= 0) & (weights <= 1)).all()
    rows = valid.any(1)
    assert torch.allclose(weights[rows].amax(1), torch.ones(int(rows.sum())))
    assert (weights[valid] == 0).any()


def test_unknown_gate_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'softmax'"):
        FeatureGate(3, 4, "softmax")
