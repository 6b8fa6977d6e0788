"""Every ablation switch builds, runs, and changes the computation it names."""

from __future__ import annotations

import pytest
import torch

from deepwe_mm import ABLATIONS, DeepWe, DeepWeLoss
from tests.deepwe_mm import BATCH, TINY, make_batch

TARGETS = torch.arange(BATCH) % 3


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_trains_a_step_and_predicts(name: str) -> None:
    config = TINY.ablate(name)
    model = DeepWe(config).train()
    DeepWeLoss(config)(model(*make_batch()), TARGETS).total.backward()
    model.eval()
    model.set_reference(torch.randn(9, config.hidden_dim))
    output = model(*make_batch())
    assert torch.isfinite(output.logits).all() and output.logits.shape == (BATCH, 3)


def test_no_feature_gates_weighs_every_observed_token_one() -> None:
    values, masks, present = make_batch()
    gated = DeepWe(TINY).eval()(values, masks, present)
    plain = DeepWe(TINY.ablate("no_feature_gates")).eval()(values, masks, present)
    for m in TINY.modalities:
        observed = masks[m] & present[m][:, None]
        assert torch.equal(plain.feature_weights[m], observed.float())
        assert (gated.feature_weights[m][observed] < 1).all()


def test_mean_fusion_weighs_present_modalities_equally() -> None:
    data = make_batch()
    attention = DeepWe(TINY).eval()(*data)
    mean = DeepWe(TINY.ablate("mean_fusion")).eval()(*data)
    present = mean.modality_present.float()
    assert torch.equal(mean.modality_weights, present / present.sum(1, keepdim=True))
    assert not torch.allclose(attention.modality_weights, mean.modality_weights, atol=1e-4)
    assert "fusion.summary" not in DeepWe(TINY.ablate("mean_fusion")).state_dict()


def test_no_graph_has_no_neighbours_and_no_graph_parameters() -> None:
    model = DeepWe(TINY.ablate("no_graph")).eval()
    model.set_reference(torch.randn(9, TINY.hidden_dim))
    output = model(*make_batch())
    assert output.neighbours is None and output.neighbour_weights is None
    assert model.graph is None and not any(key.startswith("graph") for key in model.state_dict())


@pytest.mark.parametrize(("name", "part"), [("no_contrastive", "contrastive"), ("no_sparsity", "sparsity")])
def test_loss_ablations_drop_their_term(name: str, part: str) -> None:
    output = DeepWe(TINY).train()(*make_batch())
    full = DeepWeLoss(TINY)(output, TARGETS)
    ablated = DeepWeLoss(TINY.ablate(name))(output, TARGETS)
    assert getattr(full, part) > 0 and getattr(ablated, part) == 0
    lam = {"contrastive": TINY.lambda_contrastive, "sparsity": TINY.lambda_sparsity}[part]
    assert torch.allclose(ablated.total, full.total - lam * getattr(full, part))
