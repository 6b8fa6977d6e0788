"""Modality fusion: a learned summary token attends over the present modality tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ModalityAttention(nn.Module):
    """Multi-head attention from a learned summary token to the modality tokens.

    The summary token is the only query, so its attention over the M modality tokens, averaged
    over heads, is a per-patient distribution over modalities: the modality weights. Absent
    modalities are masked with ``-inf`` before the softmax and so get exactly 0. A residual and a
    feed-forward block (post-norm) turn the attended mix into the fused embedding.

    Args:
        hidden: H, token width; divisible by ``heads``.
        heads: number of attention heads.
        dropout: dropout on the attention output and in the feed-forward block (not on the
            attention weights, so the reported weights are the ones used).
    """

    def __init__(self, hidden: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} must be divisible by heads {heads}")
        self.heads = heads
        self.summary = nn.Parameter(torch.randn(hidden) * 0.02)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.ffn_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse the modality tokens of each patient.

        Args:
            tokens: (B, M, H) modality tokens; finite everywhere (absent slots may hold anything
                finite, they get weight 0).
            present: (B, M) bool; every row needs at least one True.

        Returns:
            fused (B, H) and modality weights (B, M): exactly 0 where absent, rows summing to 1.
        """
        batch, n_mod, hidden = tokens.shape
        head_dim = hidden // self.heads
        query = self.query(self.summary).view(self.heads, head_dim)
        keys = self.key(tokens).view(batch, n_mod, self.heads, head_dim)
        values = self.value(tokens).view(batch, n_mod, self.heads, head_dim)
        scores = torch.einsum("hd,bmhd->bhm", query, keys) / math.sqrt(head_dim)
        # The one place where the present mask meets attention: absent keys get -inf.
        scores = scores.masked_fill(~present.unsqueeze(1), float("-inf"))
        attention = torch.softmax(scores, dim=-1)  # (B, heads, M)
        mixed = torch.einsum("bhm,bmhd->bhd", attention, values).reshape(batch, hidden)
        fused = self.norm(self.summary + self.dropout(self.out(mixed)))
        fused = self.ffn_norm(fused + self.dropout(self.ffn(fused)))
        return fused, attention.mean(1)


class MeanFusion(nn.Module):
    """The ablation of :class:`ModalityAttention`: the mean of the present modality tokens.

    Args:
        hidden: H, token width.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)

    def forward(self, tokens: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """Same contract as :meth:`ModalityAttention.forward`; weights are 1 / (present count)."""
        weights = present.to(tokens.dtype) / present.sum(-1, keepdim=True).clamp_min(1).to(tokens.dtype)
        fused = self.norm(torch.einsum("bm,bmh->bh", weights, tokens))
        return fused, weights


def drop_modalities(present: Tensor, p: float) -> Tensor:
    """Hide each present modality with probability ``p``, keeping at least one per patient.

    A patient who would lose every modality keeps one of its present ones, chosen at random.

    Args:
        present: (B, M) bool; every row needs at least one True.
        p: drop probability in [0, 1).

    Returns:
        (B, M) bool, a subset of ``present`` with at least one True per row.
    """
    if p <= 0:
        return present
    kept = present & (torch.rand(present.shape, device=present.device) >= p)
    pick = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0).argmax(-1)
    fallback = F.one_hot(pick, present.shape[1]).bool()
    return torch.where(kept.any(-1, keepdim=True), kept, fallback)
