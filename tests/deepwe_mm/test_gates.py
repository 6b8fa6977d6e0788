"""Feature gates: weights per token, exactly 0 off the mask, gated tokens moved towards a baseline."""

from __future__ import annotations

import math

import pytest
import torch

from deepwe_mm import FeatureGate, PatientContext


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    valid = torch.rand(13, 9) < 0.6
    valid[:, 0] = True
    valid[4] = False  # a row with nothing observed (an absent modality)
    values = torch.where(valid.unsqueeze(-1), torch.randn(13, 9, 11), 0.0)
    return values, valid


def _context() -> torch.Tensor:
    return torch.randn(13, 17)


@pytest.mark.parametrize("kind", ["stochastic", "sigmoid", "sparsemax"])
def test_a_gated_token_moves_from_its_value_towards_the_baseline(kind: str) -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, kind).eval()
    with torch.no_grad():
        gate.baseline.normal_()
        gate.score[-1].weight.normal_()  # spread the scores so some stochastic gates shut
    weights, opened, gated = gate(values, valid, _context())
    assert weights.shape == opened.shape == (13, 9) and gated.shape == (13, 9, 11)
    assert (weights[~valid] == 0).all() and (opened[~valid] == 0).all()
    assert (gated[~valid] == 0).all()
    w = weights[valid].unsqueeze(-1)
    torch.testing.assert_close(gated[valid], w * values[valid] + (1 - w) * gate.baseline)


def test_without_a_gate_every_observed_token_passes_unchanged() -> None:
    values, valid = _tokens()
    weights, _, gated = FeatureGate(11, 17, None)(values, valid)
    assert torch.equal(weights, valid.float())
    assert torch.equal(gated, values)


def test_a_gate_with_context_weighs_a_token_by_the_rest_of_the_patient() -> None:
    values, valid = _tokens()
    context, other = _context(), _context()
    torch.manual_seed(0)
    with_context = FeatureGate(11, 17, "sigmoid", context=True)
    torch.manual_seed(0)
    alone = FeatureGate(11, 17, "sigmoid", context=False)
    assert (
        with_context.weights(values, valid, context)[0][0, 0]
        != with_context.weights(values, valid, other)[0][0, 0]
    )
    assert alone.weights(values, valid)[0][0, 0] == alone.weights(values, valid)[0][0, 0]
    with pytest.raises(ValueError, match="context"):
        with_context.weights(values, valid)


def test_stochastic_gates_are_noisy_in_training_and_deterministic_at_inference() -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, "stochastic")
    with torch.no_grad():
        gate.score[-1].weight.normal_()
    context = _context()
    gate.train()
    first, opened, _ = gate(values, valid, context)
    second, _, _ = gate(values, valid, context)
    assert not torch.equal(first, second)
    gate.eval()
    mu = gate.scores(values, context)
    weights, opened_eval, _ = gate(values, valid, context)
    torch.testing.assert_close(weights[valid], mu[valid].clamp(0, 1))
    # The open probability is Φ(μ/σ), the same in training and at inference.
    expected = 0.5 * (1 + torch.erf(mu / (0.5 * math.sqrt(2))))
    torch.testing.assert_close(opened_eval[valid], expected[valid])
    torch.testing.assert_close(opened, opened_eval)
    assert ((weights[valid] == 0) | (weights[valid] == 1)).any()


def test_a_randomly_masked_token_becomes_the_baseline_whatever_its_weight() -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, "sigmoid").eval()
    with torch.no_grad():
        gate.baseline.normal_()
    keep = torch.ones_like(valid)
    keep[:, 0] = False
    weights, _, gated = gate(values, valid, _context(), keep)
    rows = valid[:, 0]
    torch.testing.assert_close(gated[rows, 0], gate.baseline.expand(int(rows.sum()), -1))
    assert (weights[rows, 0] > 0).all()  # the reported weight is the gate's, not the mask's


def test_patient_context_ignores_absent_modalities_and_unobserved_tokens() -> None:
    context = PatientContext([11, 5], 17)
    values, valid = _tokens()
    other = torch.randn(13, 4, 5)
    absent = torch.zeros(13, 4, dtype=torch.bool)
    alone = context([values, torch.zeros(13, 4, 5)], [valid, absent])
    garbage = context([values, other], [valid, absent])
    torch.testing.assert_close(alone, garbage)
    assert (alone[4] == 0).all()  # nothing observed at all
    present = torch.ones(13, 4, dtype=torch.bool)
    assert not torch.allclose(context([values, other], [valid, present]), alone)


def test_sigmoid_weights_lie_strictly_between_zero_and_one() -> None:
    values, valid = _tokens()
    weights, _ = FeatureGate(11, 17, "sigmoid").weights(values, valid, _context())
    assert ((weights[valid] > 0) & (weights[valid] < 1)).all()


def test_sparsemax_weights_peak_at_one_and_can_be_exactly_zero() -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, "sparsemax")
    with torch.no_grad():  # spread the scores so that sparsemax cuts some tokens off
        gate.score[-1].weight.mul_(20)
    weights, _ = gate.weights(values, valid, _context())
    assert ((weights >= 0) & (weights <= 1)).all()
    rows = valid.any(1)
    assert torch.allclose(weights[rows].amax(1), torch.ones(int(rows.sum())))
    assert (weights[valid] == 0).any()


def test_unknown_gate_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'softmax'"):
        FeatureGate(3, 4, "softmax")
