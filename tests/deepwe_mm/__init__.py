"""Tests of the DeepWe fusion core, with a tiny odd-sized config and batch shared by the files."""

from __future__ import annotations

import torch
from torch import Tensor

from deepwe_mm import DeepWeConfig

# Odd sizes so that a swapped axis shows: token widths 13/7/11, lengths 5/3/9, batch 13.
TINY = DeepWeConfig(
    modality_dims={"labs": 13, "notes": 7, "vitals": 11},
    n_classes=3,
    hidden_dim=36,
    n_heads=3,
    dropout=0.1,
    modality_dropout=0.3,
    graph_top_k=5,
    memory_size=17,
    lambda_contrastive=0.3,
    lambda_sparsity=0.7,
    token_counts={"labs": 5},
    flat_readout=True,  # labs are read out flat, notes and vitals pooled
)
LENGTHS = {"labs": 5, "notes": 3, "vitals": 9}
BATCH = 13

Batch = tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]


def make_batch(config: DeepWeConfig = TINY, batch: int = BATCH, seed: int = 0) -> Batch:
    """Random (values, masks, present) with some absent modalities and masked tokens.

    Row 1 lacks "notes", row 2 has only "labs", and token 1 of "labs" is masked in row 3; every
    row keeps at least one present modality with an observed token.
    """
    g = torch.Generator().manual_seed(seed)
    values, masks, present = {}, {}, {}
    for m, dim in config.modality_dims.items():
        length = LENGTHS.get(m, 4)
        values[m] = torch.randn(batch, length, dim, generator=g)
        masks[m] = torch.rand(batch, length, generator=g) < 0.7
        masks[m][:, 0] = True
        present[m] = torch.rand(batch, generator=g) < 0.7
    first = config.modalities[0]
    present[first][:4] = True
    if batch > 3 and len(config.modalities) == 3:
        present["notes"][1] = False
        present["notes"][2] = present["vitals"][2] = False
        masks["labs"][3, 1] = False
    none_left = ~torch.stack(list(present.values())).any(0)
    present[first] |= none_left
    return values, masks, present


def take(data: Batch, rows: list[int]) -> Batch:
    """The given rows of a batch, in that order."""
    index = torch.tensor(rows)
    return tuple({m: t[index] for m, t in part.items()} for part in data)  # type: ignore[return-value]
