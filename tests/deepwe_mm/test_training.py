"""Training behaviour: gradients everywhere, modality dropout, and a tiny model that overfits."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeLoss, drop_modalities
from tests.deepwe_mm import BATCH, TINY, make_batch


@pytest.mark.parametrize("gate", ["stochastic", "sigmoid", "sparsemax"])
def test_gradients_reach_every_trainable_parameter(gate: str) -> None:
    config = replace(TINY, gate=gate, dropout=0.0)
    model = DeepWe(config).train()
    for seed in range(2):  # the second step also attends to the memory bank
        model.zero_grad()
        DeepWeLoss(config)(model(*make_batch(seed=seed)), torch.arange(BATCH) % 3).total.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_modality_dropout_hides_modalities_but_keeps_one_per_patient() -> None:
    present = torch.rand(400, 3) < 0.8
    present[:, 0] = True
    kept = drop_modalities(present, 0.6)
    assert (kept <= present).all() and kept.any(1).all()
    assert kept.sum() < 0.6 * present.sum()
    assert torch.equal(drop_modalities(present, 0.0), present)


def test_dropped_modalities_weigh_zero_in_training_only() -> None:
    model = DeepWe(replace(TINY, modality_dropout=0.9)).train()
    values, masks, present = make_batch()
    given = torch.stack([present[m] for m in TINY.modalities], 1)
    output = model(values, masks, present)
    assert (output.modality_present <= given).all() and output.modality_present.any(1).all()
    assert not torch.equal(output.modality_present, given)
    assert (output.modality_weights[~output.modality_present] == 0).all()
    for i, m in enumerate(TINY.modalities):
        assert (output.feature_weights[m][~output.modality_present[:, i]] == 0).all()
    assert torch.equal(model.eval()(values, masks, present).modality_present, given)


def test_tiny_model_overfits_a_separable_batch_quickly() -> None:
    # 60 Adam steps take well under a second on one idle core; the step count is the time budget.
    config = DeepWeConfig(
        modality_dims={"labs": 13, "vitals": 7},
        n_classes=3,
        hidden_dim=24,
        n_heads=3,
        dropout=0.0,
        modality_dropout=0.0,
        graph_top_k=3,
        memory_size=0,
    )
    labels = torch.arange(BATCH) % 3
    values = {"labs": torch.randn(BATCH, 5, 13), "vitals": torch.randn(BATCH, 4, 7)}
    values["labs"][:, 2, :3] += 3.0 * torch.nn.functional.one_hot(labels, 3)  # class signal in one token
    masks = {m: torch.ones(v.shape[:2], dtype=torch.bool) for m, v in values.items()}
    present = {m: torch.ones(BATCH, dtype=torch.bool) for m in values}
    model, loss = DeepWe(config).train(), DeepWeLoss(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(60):
        optimiser.zero_grad()
        parts = loss(model(values, masks, present), labels)
        parts.total.backward()
        optimiser.step()
        history.append(parts.cross_entropy.item())
    assert history[-1] < 0.2 * history[0], history[::10]
    model.eval()
    model.set_reference(model.embed(values, masks, present).detach())
    assert torch.equal(model(values, masks, present).logits.argmax(1), labels)
