"""Feature gates: an input-conditional weight per token, then weighted pooling to one token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepwe_mm.sparsemax import sparsemax


class FeatureGate(nn.Module):
    """Weights the tokens of one modality and pools them: ``w = gate(e)``, ``z = e ⊙ w``.

    The pooled token is the mean of ``z`` over the observed tokens, so a weight scales a token's
    share of the modality rather than being renormalised away; the sparsity loss pushing weights
    down therefore has a cost, and the model keeps the tokens it needs.

    Args:
        dim: token width D.
        hidden: width of the scoring MLP.
        kind: ``"sigmoid"`` (independent weight in (0, 1) per token), ``"sparsemax"`` (sparsemax
            over the observed tokens divided by its maximum: weights in [0, 1], the top token at
            1, low-scoring tokens exactly 0) or ``None`` (no gate: every observed token weighs 1).
    """

    def __init__(self, dim: int, hidden: int, kind: str | None = "sigmoid") -> None:
        super().__init__()
        if kind not in ("sigmoid", "sparsemax", None):
            raise ValueError(f"feature gate kind must be 'sigmoid', 'sparsemax' or None, got {kind!r}")
        self.kind = kind
        self.score = None
        if kind is not None:
            # Sparsemax ignores a shift of all scores: a final bias would never get a gradient.
            last = nn.Linear(hidden, 1, bias=kind == "sigmoid")
            self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), last)

    def weights(self, values: Tensor, valid: Tensor) -> Tensor:
        """Feature weights, exactly 0 where ``valid`` is False.

        Args:
            values: (B, T, D) token embeddings, already 0 wherever ``valid`` is False.
            valid: (B, T) bool, True for observed tokens of a present modality.

        Returns:
            (B, T) weights.
        """
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        if self.score is None:
            return torch.where(valid, torch.ones((), dtype=values.dtype, device=values.device), zero)
        scores = self.score(values).squeeze(-1)
        if self.kind == "sigmoid":
            return torch.where(valid, torch.sigmoid(scores), zero)
        p = sparsemax(scores, valid, dim=-1)
        top = p.amax(-1, keepdim=True)
        # A row without observed tokens has top 0; divide it by 1 so no NaN reaches the backward.
        top = torch.where(top > 0, top, torch.ones((), dtype=values.dtype, device=values.device))
        return torch.where(valid, p / top, zero)

    def forward(self, values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Weight and pool one modality.

        Args:
            values: (B, T, D) token embeddings, already 0 wherever ``valid`` is False.
            valid: (B, T) bool, True for observed tokens of a present modality.

        Returns:
            weights (B, T), 0 where ``valid`` is False, and pooled (B, D): the mean of
            ``values * weights`` over the valid tokens (0 for a row without any).
        """
        weights = self.weights(values, valid)
        count = valid.sum(-1, keepdim=True).clamp_min(1).to(values.dtype)
        pooled = (values * weights.unsqueeze(-1)).sum(1) / count
        return weights, pooled
