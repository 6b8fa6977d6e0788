"""Feature gates: weights per token, exactly 0 off the mask, and the weighted mean pooling."""

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


@pytest.mark.parametrize("kind", ["sigmoid", "sparsemax", None])
def test_pooled_token_is_the_mean_of_weighted_observed_tokens(kind: str | None) -> None:
    values, valid = _tokens()
    weights, pooled = FeatureGate(11, 17, kind)(values, valid)
    assert weights.shape == (13, 9) and pooled.shape == (13, 11)
    assert (weights[~valid] == 0).all()
    for row in (0, 7):
        observed = valid[row]
        expected = (values[row, observed] * weights[row, observed, None]).mean(0)
        assert torch.allclose(pooled[row], expected, atol=1e-6)
    assert torch.equal(pooled[4], torch.zeros(11))


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
