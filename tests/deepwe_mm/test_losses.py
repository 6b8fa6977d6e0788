"""The loss: its parts, their weighting, and each part against a direct computation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepwe_mm import (
    DeepWe,
    DeepWeLoss,
    auxiliary_cross_entropy,
    feature_sparsity,
    supervised_contrastive_loss,
)
from tests.deepwe_mm import BATCH, TINY, make_batch


def test_parts_are_finite_and_total_is_their_weighted_sum() -> None:
    config = replace(TINY, class_weights=(1.0, 3.0, 0.5))
    output = DeepWe(config).train()(*make_batch(config))
    targets = torch.arange(BATCH) % 3
    parts = DeepWeLoss(config)(output, targets)
    for part in (parts.total, parts.cross_entropy, parts.contrastive, parts.sparsity, parts.auxiliary):
        assert part.dim() == 0 and torch.isfinite(part)
    assert parts.contrastive > 0 and parts.sparsity > 0 and parts.auxiliary > 0
    expected = (
        parts.cross_entropy
        + 0.3 * parts.contrastive
        + 0.7 * parts.sparsity
        + config.lambda_auxiliary * parts.auxiliary
    )
    assert torch.allclose(parts.total, expected)


def test_cross_entropy_uses_the_class_weights() -> None:
    config = replace(TINY, class_weights=(1.0, 3.0, 0.5))
    output = DeepWe(config).eval()(*make_batch(config))
    targets = torch.arange(BATCH) % 3
    weights = torch.tensor(config.class_weights)[targets]
    nll = -F.log_softmax(output.logits, -1).gather(1, targets[:, None]).squeeze(1)
    expected = (weights * nll).sum() / weights.sum()
    assert torch.allclose(DeepWeLoss(config)(output, targets).cross_entropy, expected)


def _supcon_by_loops(z: torch.Tensor, labels: list[int], tau: float) -> float:
    z = F.normalize(z, dim=-1)
    losses = []
    for i in range(len(labels)):
        others = [a for a in range(len(labels)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        losses.append(
            -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denominator) for p in positives)
            / len(positives)
        )
    return sum(losses) / len(losses)


def test_supervised_contrastive_matches_the_definition() -> None:
    z = torch.randn(7, 5)
    labels = [0, 1, 0, 2, 1, 0, 3]  # class 2 and 3 anchors have no positive and are skipped
    got = supervised_contrastive_loss(z, torch.tensor(labels), temperature=0.5)
    assert math.isclose(float(got), _supcon_by_loops(z, labels, 0.5), rel_tol=1e-5)


def test_supervised_contrastive_prefers_clustered_classes_and_is_zero_without_pairs() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    clustered = centres[labels] + 0.1 * torch.randn(6, 3)
    mixed = centres[labels[torch.tensor([0, 3, 1, 4, 2, 5])]] + 0.1 * torch.randn(6, 3)
    assert supervised_contrastive_loss(clustered, labels, 0.1) < supervised_contrastive_loss(
        mixed, labels, 0.1
    )
    assert supervised_contrastive_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]), 0.1) == 0


def test_sparsity_is_the_mean_weight_over_counted_tokens_only() -> None:
    weights = {"a": torch.tensor([[0.2, 0.9], [0.4, 0.8]]), "b": torch.tensor([[1.0, 0.6, 0.3]] * 2)}
    masks = {"a": torch.tensor([[True, False], [True, True]]), "b": torch.tensor([[True, False, False]] * 2)}
    expected = (0.2 + 0.4 + 0.8 + 1.0 + 1.0) / 5
    assert math.isclose(float(feature_sparsity(weights, masks)), expected, rel_tol=1e-6)


def test_sparsity_with_a_target_only_penalises_the_share_above_it() -> None:
    opened = {"a": torch.tensor([[0.9, 0.9, 0.0], [0.1, 0.1, 0.1]])}
    masks = {"a": torch.tensor([[True, True, False], [True, True, True]])}
    # Patient 0 keeps 0.9 of its two tokens open, patient 1 0.1 of three: only 0 exceeds 0.5.
    assert math.isclose(float(feature_sparsity(opened, masks, target=0.5)), (0.9 - 0.5) / 2, rel_tol=1e-6)
    assert float(feature_sparsity(opened, masks, target=0.95)) == 0


def test_auxiliary_cross_entropy_reads_each_modality_on_the_patients_that_have_it() -> None:
    logits = torch.randn(5, 2, 3)
    present = torch.tensor([[True, False], [True, True], [False, True], [True, False], [True, True]])
    targets = torch.tensor([0, 2, 1, 1, 0])
    first = F.cross_entropy(logits[present[:, 0], 0], targets[present[:, 0]])
    second = F.cross_entropy(logits[present[:, 1], 1], targets[present[:, 1]])
    got = auxiliary_cross_entropy(logits, present, targets)
    assert torch.allclose(got, (first + second) / 2)
    # Whatever an absent slot holds is never read.
    changed = logits.clone()
    changed[~present] = 1e6
    assert torch.allclose(auxiliary_cross_entropy(changed, present, targets), got)


def test_the_teacher_term_is_the_cross_entropy_against_its_probabilities() -> None:
    config = replace(TINY, lambda_teacher=2.0)
    output = DeepWe(config).eval()(*make_batch(config))
    targets = torch.arange(BATCH) % 3
    loss = DeepWeLoss(config)
    without = loss(output, targets)
    # A teacher as sure as the labels teaches the labels' cross-entropy.
    sure = loss(output, targets, F.one_hot(targets, 3).float())
    assert torch.allclose(sure.teacher, sure.cross_entropy)
    assert torch.allclose(sure.total, without.total + 2.0 * sure.cross_entropy)
    unsure = torch.full((BATCH, 3), 1 / 3)
    expected = -F.log_softmax(output.logits, -1).mean()
    assert torch.allclose(loss(output, targets, unsure).teacher, expected)
    assert without.teacher == 0
    off = DeepWeLoss(replace(TINY, lambda_teacher=0.0))(output, targets, unsure)
    assert off.teacher == 0 and torch.allclose(off.total, without.total)
    with pytest.raises(ValueError, match="teacher probabilities must be"):
        loss(output, targets, unsure[:, :2])


def test_bad_targets_are_refused() -> None:
    output = DeepWe(TINY).eval()(*make_batch())
    loss = DeepWeLoss(TINY)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        loss(output, torch.full((BATCH,), 3))
    with pytest.raises(ValueError, match="targets must be long"):
        loss(output, torch.zeros(BATCH))


def test_the_sparsity_scale_ramps_the_sparsity_term_only() -> None:
    output = DeepWe(TINY).train()(*make_batch())
    targets = torch.arange(BATCH) % 3
    loss = DeepWeLoss(TINY)
    full = loss(output, targets)
    loss.sparsity_scale = 0.0
    off = loss(output, targets)
    assert torch.allclose(full.total - off.total, TINY.lambda_sparsity * full.sparsity)


def test_a_unimodal_warm_up_trains_the_modality_heads_alone() -> None:
    config = replace(TINY, dropout=0.0)
    model = DeepWe(config).train()
    output = model(*make_batch(config))
    targets = torch.arange(BATCH) % 3
    loss = DeepWeLoss(config)
    loss.unimodal_only = True
    parts = loss(output, targets)
    assert torch.allclose(parts.total, parts.auxiliary + config.lambda_sparsity * parts.sparsity)
    parts.total.backward()
    joint_head = [p.grad for p in model.head.parameters()]
    assert all(g is None or not g.any() for g in joint_head)
    assert all(p.grad is not None and p.grad.any() for p in model.modality_heads.parameters())


def test_a_unimodal_warm_up_without_modality_heads_is_refused() -> None:
    config = replace(TINY, additive_fusion=False)
    output = DeepWe(config).train()(*make_batch(config))
    loss = DeepWeLoss(config)
    loss.unimodal_only = True
    with pytest.raises(ValueError, match="per-modality heads"):
        loss(output, torch.arange(BATCH) % 3)
