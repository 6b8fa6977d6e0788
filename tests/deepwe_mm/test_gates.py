"""Feature gates: weights per token, exactly 0 off the mask, gated tokens moved towards a baseline."""

from __future__ import annotations

import math

import pytest
import torch

from deepwe_mm import FeatureGate, PatientContext
from deepwe_mm.gates import expected_clamp, leaky_clamp


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
    # At inference the weight is the training gate's mean E[clamp(μ + σε, 0, 1)] (by Monte Carlo).
    draws = (mu.unsqueeze(-1) + 0.5 * torch.randn(*mu.shape, 20_000)).clamp(0, 1).mean(-1)
    torch.testing.assert_close(weights[valid], draws[valid], atol=0.01, rtol=0)
    assert torch.equal(weights, gate(values, valid, context)[0])
    # The open probability is Φ(μ/σ), the same in training and at inference.
    expected = 0.5 * (1 + torch.erf(mu / (0.5 * math.sqrt(2))))
    torch.testing.assert_close(opened_eval[valid], expected[valid])
    torch.testing.assert_close(opened, opened_eval)


def test_gate_means_rank_gates_that_a_clamp_would_tie() -> None:
    mu = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.5])
    means = expected_clamp(mu, 0.5)
    assert (means.diff() > 0).all(), "strictly increasing in μ, so gates past the clamp still rank"
    assert means[0] < 1e-4 and means[-1] > 0.999
    assert means[3] == pytest.approx(0.5)


def test_the_leaky_clamp_is_the_clamp_forward_and_leaks_its_gradient_outside() -> None:
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = leaky_clamp(x, 0.1)
    assert torch.equal(y, x.detach().clamp(0, 1))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.1, 1.0, 0.1]))
    plain = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    leaky_clamp(plain, 0.0).sum().backward()
    assert torch.allclose(plain.grad, torch.tensor([0.0, 1.0, 0.0]))


def test_a_closed_gate_still_learns_to_reopen_with_a_leak() -> None:
    """With every noise draw below 0, the plain clamp gives the loss no gradient to reopen the gate."""
    values = torch.randn(8, 3, 5)
    valid = torch.ones(8, 3, dtype=torch.bool)
    grads = {}
    for leak in (0.0, 0.1):
        torch.manual_seed(0)
        gate = FeatureGate(5, 4, "stochastic", context=False, leak=leak).train()
        with torch.no_grad():
            gate.score[-1].bias.fill_(-10.0)  # shut for every draw of σε
            gate.baseline.zero_()
        _, _, gated = gate(values, valid)
        (-(gated * values).sum()).backward()  # a loss that wants the tokens through
        grads[leak] = gate.score[-1].bias.grad.item()
    assert grads[0.0] == 0.0
    assert grads[0.1] < 0, "the gradient says: open the gate"


def test_position_offsets_select_a_variable_for_every_patient() -> None:
    values, valid = _tokens()
    gate = FeatureGate(11, 17, "stochastic", context=False, positions=9).eval()
    with torch.no_grad():
        gate.position_offset[2] = -10.0
        gate.position_offset[5] = 10.0
    weights, _, _ = gate(values, valid)
    assert (weights[valid[:, 2], 2] < 1e-6).all() and (weights[valid[:, 5], 5] > 1 - 1e-6).all()
    with pytest.raises(ValueError, match=r"9 positions \(token_counts\), got 4 tokens"):
        gate(values[:, :4], valid[:, :4])


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
