"""Encoder heads: a cross-entropy on each modality's ungated tokens that reaches the encoder
whatever its gates do."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeLoss
from deepwe_mm.gates import mean_pool
from tests.deepwe_mm import BATCH, TINY, make_batch

WITH_HEADS = replace(TINY, lambda_encoder=0.4, modality_dropout=0.0)


def test_encoder_logits_exist_in_training_only() -> None:
    model = DeepWe(WITH_HEADS)
    batch = make_batch(WITH_HEADS)
    trained = model.train()(*batch)
    assert trained.encoder_logits is not None
    assert trained.encoder_logits.shape == (BATCH, len(WITH_HEADS.modalities), WITH_HEADS.n_classes)
    assert model.eval()(*batch).encoder_logits is None
    assert DeepWe(TINY).train()(*make_batch(TINY)).encoder_logits is None


def test_encoder_logits_are_a_linear_head_on_the_mean_of_the_ungated_tokens() -> None:
    model = DeepWe(WITH_HEADS).train()
    values, masks, present = make_batch(WITH_HEADS)
    output = model(values, masks, present)
    assert model.encoder_heads is not None
    for i, m in enumerate(WITH_HEADS.modalities):
        valid = masks[m] & present[m].unsqueeze(-1)
        clean = torch.where(valid.unsqueeze(-1), values[m], 0.0)
        expected = model.encoder_heads[i](mean_pool(clean, valid))
        rows = present[m]
        assert torch.allclose(output.encoder_logits[rows, i], expected[rows], atol=1e-6)


def test_loss_adds_the_weighted_encoder_cross_entropy_over_present_patients() -> None:
    model = DeepWe(WITH_HEADS).train()
    output = model(*make_batch(WITH_HEADS))
    targets = torch.arange(BATCH) % WITH_HEADS.n_classes
    parts = DeepWeLoss(WITH_HEADS)(output, targets)
    present = output.modality_present
    by_modality = [
        F.cross_entropy(output.encoder_logits[present[:, i], i], targets[present[:, i]])
        for i in range(present.shape[1])
    ]
    assert torch.allclose(parts.encoder, torch.stack(by_modality).mean())
    without = (
        parts.cross_entropy
        + WITH_HEADS.lambda_contrastive * parts.contrastive
        + WITH_HEADS.lambda_sparsity * parts.sparsity
        + WITH_HEADS.lambda_auxiliary * parts.auxiliary
    )
    assert torch.allclose(parts.total, without + WITH_HEADS.lambda_encoder * parts.encoder)


@pytest.mark.parametrize("heads", [False, True])
def test_an_encoder_behind_shut_gates_learns_only_through_its_head(heads: bool) -> None:
    # Without the patient context, which reads every modality's tokens, the gates are the only way
    # from the prediction back to the encoder.
    config = replace(WITH_HEADS, lambda_encoder=0.4 if heads else 0.0, token_dropout=0.0, gate_context=False)
    model = DeepWe(config).train()
    gate = model.gates[config.modalities.index("vitals")]
    with torch.no_grad():  # every vitals gate shut for every noise draw
        gate.score[-1].weight.zero_()
        gate.score[-1].bias.fill_(-100.0)
    values, masks, present = make_batch(config)
    values["vitals"] = values["vitals"].clone().requires_grad_(True)
    output = model(values, masks, present)
    assert output.feature_weights["vitals"].abs().max() == 0
    DeepWeLoss(config)(output, torch.arange(BATCH) % config.n_classes).total.backward()
    reached = values["vitals"].grad.abs().sum(-1)  # (B, T)
    valid = masks["vitals"] & present["vitals"].unsqueeze(-1)
    # The gate scores read the tokens too, but a gate shut this far passes none.
    assert (reached[valid] > 0).all() if heads else (reached == 0).all()
    assert (reached[~valid] == 0).all()


def test_negative_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="lambda_encoder must be >= 0"):
        DeepWeConfig(modality_dims={"a": 3}, lambda_encoder=-0.1)
