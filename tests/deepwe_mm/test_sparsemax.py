"""Sparsemax against its defining properties and a worked example."""

from __future__ import annotations

import torch

from deepwe_mm import sparsemax


def test_worked_example() -> None:
    # Sorted (1, 0.5, 0): support k = 2, tau = (1.5 - 1) / 2 = 0.25.
    p = sparsemax(torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(p, torch.tensor([0.0, 0.75, 0.25]))


def test_is_a_sparse_distribution_along_the_axis() -> None:
    scores = torch.randn(13, 7, 5) * 3
    p = sparsemax(scores, dim=1)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(1), torch.ones(13, 5), atol=1e-6)
    assert (p == 0).any(), "with spread-out scores some entries must be exactly 0"
    # The order of the scores is kept: a higher score never gets a lower probability.
    ranks_ok = (scores.unsqueeze(2) > scores.unsqueeze(1)) <= (p.unsqueeze(2) >= p.unsqueeze(1))
    assert ranks_ok.all()


def test_close_scores_give_a_dense_distribution_and_shift_changes_nothing() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.15, 0.05]])
    p = sparsemax(scores)
    assert (p > 0).all()
    assert torch.allclose(sparsemax(scores + 42.0), p, atol=1e-5)
    assert torch.allclose(sparsemax(torch.zeros(1, 4)), torch.full((1, 4), 0.25))


def test_mask_excludes_entries_even_when_they_hold_nan() -> None:
    scores = torch.tensor([[2.0, float("nan"), 1.5, 0.0], [float("inf"), 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    p = sparsemax(scores, mask)
    assert torch.equal(p[0], sparsemax(torch.tensor([2.0, -1e9, 1.5, 0.0])))
    assert p[0, 1] == 0 and torch.isclose(p[0].sum(), torch.tensor(1.0))
    assert torch.equal(p[1], torch.zeros(4)), "a row without entries is all 0, not NaN"


def test_gradient_matches_finite_differences() -> None:
    scores = torch.tensor([[0.3, 1.1, -0.4, 0.9, 0.2]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, True, False]])
    assert torch.autograd.gradcheck(lambda s: sparsemax(s, mask), (scores,))
