"""Readout of a modality's gated tokens: flat (by position) for fixed token counts, else pooled."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepwe_mm import DeepWe
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
