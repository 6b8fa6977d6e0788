"""Feature gates: an input-conditional weight per token, and the gated token ``w·e + (1 − w)·b``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepwe_mm.sparsemax import sparsemax


class FeatureGate(nn.Module):
    """Weights the tokens of one modality: ``w = gate(e, context)``, ``z = w·e + (1 − w)·b``.

    A weight moves its token towards a learned baseline ``b`` rather than scaling it: a token at
    weight 0 is *replaced* by the baseline, so no later normalisation can undo the gate, and the
    sparsity loss pushing weights down has a real cost.

    With ``context`` the scoring network reads each token together with the mean of the patient's
    observed tokens, so whether a variable matters may depend on the rest of the patient
    (instance-wise selection).

    Args:
        dim: token width D.
        hidden: width of the scoring MLP.
        kind: ``"sigmoid"`` (independent weight in (0, 1) per token), ``"sparsemax"`` (sparsemax
            over the observed tokens divided by its maximum: weights in [0, 1], the top token at
            1, low-scoring tokens exactly 0) or ``None`` (no gate: every observed token weighs 1).
        context: score each token together with the patient's mean token.
    """

    def __init__(self, dim: int, hidden: int, kind: str | None = "sigmoid", context: bool = True) -> None:
        super().__init__()
        if kind not in ("sigmoid", "sparsemax", None):
            raise ValueError(f"feature gate kind must be 'sigmoid', 'sparsemax' or None, got {kind!r}")
        self.kind = kind
        self.context = context
        self.score = None
        self.baseline = None
        if kind is not None:
            # Sparsemax ignores a shift of all scores: a final bias would never get a gradient.
            last = nn.Linear(hidden, 1, bias=kind == "sigmoid")
            width = 2 * dim if context else dim
            self.score = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), last)
            self.baseline = nn.Parameter(torch.zeros(dim))

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
        inputs = values
        if self.context:
            count = valid.sum(-1, keepdim=True).clamp_min(1).to(values.dtype)
            context = (values.sum(1) / count).unsqueeze(1).expand_as(values)
            inputs = torch.cat([values, context], dim=-1)
        scores = self.score(inputs).squeeze(-1)
        if self.kind == "sigmoid":
            return torch.where(valid, torch.sigmoid(scores), zero)
        p = sparsemax(scores, valid, dim=-1)
        top = p.amax(-1, keepdim=True)
        # A row without observed tokens has top 0; divide it by 1 so no NaN reaches the backward.
        top = torch.where(top > 0, top, torch.ones((), dtype=values.dtype, device=values.device))
        return torch.where(valid, p / top, zero)

    def forward(self, values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Weight one modality's tokens.

        Args:
            values: (B, T, D) token embeddings, already 0 wherever ``valid`` is False.
            valid: (B, T) bool, True for observed tokens of a present modality.

        Returns:
            weights (B, T), 0 where ``valid`` is False, and the gated tokens (B, T, D):
            ``w·e + (1 − w)·b`` where valid, 0 elsewhere.
        """
        weights = self.weights(values, valid)
        if self.baseline is None:
            return weights, values
        w = weights.unsqueeze(-1)
        gated = w * values + (1 - w) * self.baseline
        return weights, torch.where(
            valid.unsqueeze(-1), gated, torch.zeros((), dtype=values.dtype, device=values.device)
        )


def mean_pool(tokens: Tensor, valid: Tensor) -> Tensor:
    """(B, T, D) tokens, (B, T) bool -> (B, D) mean over the valid tokens (0 for a row without any)."""
    count = valid.sum(-1, keepdim=True).clamp_min(1).to(tokens.dtype)
    return (tokens * valid.unsqueeze(-1).to(tokens.dtype)).sum(1) / count
