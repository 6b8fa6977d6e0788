"""Readout of a modality's gated tokens (flat by position for fixed token counts, else pooled) and
its projection to the modality token."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from sklearn.metrics import roc_auc_score

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeLoss
from tests.deepwe_mm import TINY, make_batch


def _swap_labs_tokens(values: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    order = torch.tensor([2, 1, 0, 3, 4])
    values["labs"], masks["labs"] = values["labs"][:, order], masks["labs"][:, order]


@pytest.mark.parametrize("flat", [True, False])
def test_a_flat_readout_knows_which_position_held_which_token(flat: bool) -> None:
    config = replace(TINY, flat_readout=flat, use_graph=False)
    model = DeepWe(config).eval()
    values, masks, present = make_batch(config)
    with torch.no_grad():
        before = model(values, masks, present).logits
        _swap_labs_tokens(values, masks)
        after = model(values, masks, present).logits
    assert torch.allclose(before, after, atol=1e-6) is not flat


def test_a_flat_readout_refuses_a_different_token_count() -> None:
    model = DeepWe(TINY).eval()
    values, masks, present = make_batch()
    values["labs"], masks["labs"] = values["labs"][:, :4], masks["labs"][:, :4]
    with pytest.raises(ValueError, match="token_counts"):
        model(values, masks, present)


def _interaction_auroc(projection: str) -> float:
    """Test AUROC of a flat-readout model fitted for 600 steps to 11 variables whose outcome hangs
    on x0 · x1 alone (INVASE's Syn1, with a stronger signal; the true log-odds reach about 0.82)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n, t, d = 6000, 11, 8
    x = torch.randn(n, t, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(2 * x[:, 0] * x[:, 1])).long()
    values = x.unsqueeze(-1) * torch.randn(t, d, generator=g) + torch.randn(t, d, generator=g)
    config = DeepWeConfig(
        modality_dims={"labs": d},
        hidden_dim=32,
        token_counts={"labs": t},
        flat_readout=True,
        projection=projection,
        use_graph=False,
    )
    model, loss_fn = DeepWe(config).train(), DeepWeLoss(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    masks, present = torch.ones(n, t, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    train = n * 2 // 3
    for _ in range(600):
        rows = torch.randint(0, train, (64,), generator=g)
        loss = loss_fn(model({"labs": values[rows]}, {"labs": masks[rows]}, {"labs": present[rows]}), y[rows])
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model.eval()(
            {"labs": values[train:]}, {"labs": masks[train:]}, {"labs": present[train:]}
        ).logits
    return float(roc_auc_score(y[train:].numpy(), (logits[:, 1] - logits[:, 0]).numpy()))


def test_an_mlp_projection_learns_an_interaction_that_the_linear_one_misses() -> None:
    mlp, linear = _interaction_auroc("mlp"), _interaction_auroc("linear")
    assert mlp > 0.75 and mlp > linear + 0.1, (mlp, linear)


def test_an_unknown_projection_is_refused() -> None:
    with pytest.raises(ValueError, match="projection must be one of"):
        replace(TINY, projection="deep")
