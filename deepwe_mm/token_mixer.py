"""Token interaction inside a modality: gated tokens attend to each other before the modality level.

A modality's gated tokens may first be pooled into groups (the statistics of one sensor channel
become that channel's token); a small pre-norm transformer then lets the groups interact, and a
learned summary token reads them out as the modality's token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pool_groups(tokens: Tensor, valid: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean of the valid tokens of each group.

    Args:
        tokens: (B, T, D).
        valid: (B, T) bool.
        groups: (T,) long group index of each token, in [0, n_groups).
        n_groups: G.

    Returns:
        (B, G, D) group tokens (0 for a group without a valid token) and (B, G) bool, True where a
        group has a valid token.
    """
    batch, _, dim = tokens.shape
    weight = valid.to(tokens.dtype)
    sums = tokens.new_zeros(batch, n_groups, dim).index_add(1, groups, tokens * weight.unsqueeze(-1))
    counts = tokens.new_zeros(batch, n_groups).index_add(1, groups, weight)
    return sums / counts.clamp_min(1).unsqueeze(-1), counts > 0


def attention_heads(dim: int, wanted: int) -> int:
    """The most heads up to ``wanted`` that divide ``dim``."""
    return next(h for h in range(min(wanted, dim), 0, -1) if dim % h == 0)


class TokenMixer(nn.Module):
    """``[summary; tokens]`` -> ``layers`` pre-norm transformer layers -> the summary's output.

    Invalid tokens are masked as keys, so a patient's output never depends on padding or on other
    patients in the batch.

    Args:
        dim: D, token width.
        layers: transformer layers (>= 1).
        heads: attention heads wanted (the most up to this that divide ``dim``).
        dropout: dropout inside the layers.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.summary = nn.Parameter(torch.randn(dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            attention_heads(dim, heads),
            2 * dim,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """(B, T, D) tokens and (B, T) bool -> (B, D)."""
        batch = tokens.shape[0]
        summary = self.summary.to(tokens.dtype).expand(batch, 1, -1)
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=valid.device), valid], dim=1)
        mixed = self.layers(torch.cat([summary, tokens], dim=1), src_key_padding_mask=~keep)
        return self.norm(mixed[:, 0])
