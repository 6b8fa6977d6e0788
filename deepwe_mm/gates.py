"""Feature gates: an input-conditional weight per token, and the gated token ``w·e + (1 − w)·b``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepwe_mm.sparsemax import sparsemax

# Noise scale of the stochastic gates (Yamada et al. 2020 use 0.5).
GATE_NOISE = 0.5
# A token counts as selected when its (deterministic, inference-time) weight exceeds this.
SELECTED_ABOVE = 0.5


class FeatureGate(nn.Module):
    """Weights the tokens of one modality: ``w = gate(e, c)``, ``z = w·e + (1 − w)·b``.

    A weight moves its token towards a learned baseline ``b`` rather than scaling it: a token at
    weight 0 is *replaced* by the baseline, so no later normalisation can undo the gate, and the
    sparsity loss pushing weights down has a real cost.

    With a context ``c`` (a summary of the whole patient, all modalities) the scoring network reads
    each token together with it, so whether a variable matters may depend on the rest of the
    patient (instance-wise selection: in INVASE's Syn4, X11 decides which features count).

    Args:
        dim: token width D.
        hidden: width of the scoring MLP and of the context.
        kind: ``"stochastic"`` (instance-wise stochastic gates, Yamada et al. 2020 / LSPIN: in
            training ``w = clamp(μ + σε, 0, 1)`` with ε ~ N(0, 1), at inference its mean
            ``E[clamp(μ + σε, 0, 1)]``, deterministic and close to 0 or 1 where the gate is sure),
            ``"sigmoid"`` (an independent
            weight in (0, 1) per token), ``"sparsemax"`` (sparsemax over the observed tokens divided
            by its maximum: the top token at 1, low-scoring tokens exactly 0) or ``None`` (no gate:
            every observed token weighs 1).
        context: score each token together with the patient context.
        leak: stochastic gates only: the gradient that passes through the clamp where
            ``μ + σε`` falls outside [0, 1] (the forward value stays clamped). With 0 a gate that
            has closed for every noise draw gets no gradient from the prediction loss and can never
            reopen, and one that is always open can never close; a small leak lets the loss keep
            saying what opening or closing would do.
        positions: for a modality whose token ``t`` is always the same feature (a tabular
            variable), its token count T: each position gets its own learned score offset, so a
            feature can be selected or dropped for every patient (the global ``μ_d`` of stochastic
            gates) while the scoring network adds the per-patient part. None: no offsets.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        kind: str | None = "stochastic",
        context: bool = True,
        leak: float = 0.0,
        positions: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("stochastic", "sigmoid", "sparsemax", None):
            raise ValueError(
                f"feature gate kind must be 'stochastic', 'sigmoid', 'sparsemax' or None, got {kind!r}"
            )
        self.kind = kind
        self.context = context
        self.leak = leak
        self.score = None
        self.baseline = None
        if kind is not None:
            # Sparsemax ignores a shift of all scores: a final bias would never get a gradient.
            last = nn.Linear(hidden, 1, bias=kind != "sparsemax")
            if kind == "stochastic":
                # Every gate starts about half open, as in STG.
                nn.init.normal_(last.weight, std=0.01)
                nn.init.constant_(last.bias, 0.5)
            width = dim + hidden if context else dim
            self.score = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), last)
            self.baseline = nn.Parameter(torch.zeros(dim))
        self.position_offset = (
            nn.Parameter(torch.zeros(positions)) if kind is not None and positions is not None else None
        )

    def scores(self, values: Tensor, context: Tensor | None) -> Tensor:
        """(B, T, D) tokens and a (B, H) context -> (B, T) raw gate scores (μ for stochastic gates)."""
        if self.score is None:
            raise ValueError("a feature gate without a kind has no scores")
        inputs = values
        if self.context:
            if context is None:
                raise ValueError("this feature gate reads a patient context; pass one")
            inputs = torch.cat([values, context.unsqueeze(1).expand(-1, values.shape[1], -1)], dim=-1)
        scores = self.score(inputs).squeeze(-1)
        if self.position_offset is not None:
            if scores.shape[1] != self.position_offset.numel():
                raise ValueError(
                    f"this feature gate has {self.position_offset.numel()} positions (token_counts), "
                    f"got {scores.shape[1]} tokens"
                )
            scores = scores + self.position_offset
        return scores

    def weights(self, values: Tensor, valid: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Feature weights and each token's probability of being open, both 0 where not valid.

        Args:
            values: (B, T, D) token embeddings, already 0 wherever ``valid`` is False.
            valid: (B, T) bool, True for observed tokens of a present modality.
            context: (B, H) patient context (required when the gate reads one).

        Returns:
            weights (B, T) in [0, 1], and (B, T) open probabilities: ``Φ(μ/σ)`` for stochastic gates
            (the expected L0 norm's terms), the weight itself for the other kinds.
        """
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        if self.score is None:
            ones = torch.where(valid, torch.ones((), dtype=values.dtype, device=values.device), zero)
            return ones, ones
        scores = self.scores(values, context)
        if self.kind == "stochastic":
            mu = scores
            if self.training:
                mu = mu + GATE_NOISE * torch.randn_like(mu)
            open_probability = torch.special.ndtr(scores / GATE_NOISE)
            weight = leaky_clamp(mu, self.leak) if self.training else expected_clamp(mu, GATE_NOISE)
            return torch.where(valid, weight, zero), torch.where(valid, open_probability, zero)
        if self.kind == "sigmoid":
            w = torch.where(valid, torch.sigmoid(scores), zero)
            return w, w
        p = sparsemax(scores, valid, dim=-1)
        top = p.amax(-1, keepdim=True)
        # A row without observed tokens has top 0; divide it by 1 so no NaN reaches the backward.
        top = torch.where(top > 0, top, torch.ones((), dtype=values.dtype, device=values.device))
        w = torch.where(valid, p / top, zero)
        return w, w

    def forward(
        self,
        values: Tensor,
        valid: Tensor,
        context: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Weight one modality's tokens.

        Args:
            values: (B, T, D) token embeddings, already 0 wherever ``valid`` is False.
            valid: (B, T) bool, True for observed tokens of a present modality.
            context: (B, H) patient context (required when the gate reads one).
            keep: optional (B, T) bool; False replaces the token by the baseline whatever its
                weight (random masking in training, so the predictor also learns from inputs that
                the gates did not choose).

        Returns:
            weights (B, T), 0 where ``valid`` is False; open probabilities (B, T) (see
            :meth:`weights`); and the gated tokens (B, T, D): ``w·e + (1 − w)·b`` where valid, 0
            elsewhere.
        """
        weights, open_probability = self.weights(values, valid, context)
        if self.baseline is None:
            return weights, open_probability, values
        applied = weights if keep is None else weights * keep.to(weights.dtype)
        w = applied.unsqueeze(-1)
        gated = w * values + (1 - w) * self.baseline
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        return weights, open_probability, torch.where(valid.unsqueeze(-1), gated, zero)


class PatientContext(nn.Module):
    """A summary of the whole patient that every feature gate reads: ``(B, H)``.

    Per modality, the mean over its usable tokens of ``GELU(Linear(e))`` (a DeepSets summary);
    then the mean over the modalities that take part. Absent modalities and unobserved tokens
    add nothing.

    Args:
        dims: token width D_m of each modality, in modality order.
        hidden: H, the context width.
    """

    def __init__(self, dims: list[int], hidden: int) -> None:
        super().__init__()
        self.summaries = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.GELU()) for d in dims)

    def forward(self, values: list[Tensor], valid: list[Tensor]) -> Tensor:
        """Args: per modality (B, T_m, D_m) tokens (0 where not valid) and (B, T_m) bool valid.

        Returns:
            (B, H); 0 for a row without any usable token.
        """
        summaries, taking_part = [], []
        for summary, value, mask in zip(self.summaries, values, valid, strict=True):
            summaries.append(mean_pool(summary(value), mask))
            taking_part.append(mask.any(-1))
        stacked = torch.stack(summaries, dim=1)  # (B, M, H)
        part = torch.stack(taking_part, dim=1)  # (B, M)
        return mean_pool(stacked, part)


def expected_clamp(mu: Tensor, sigma: float) -> Tensor:
    """``E[clamp(μ + σε, 0, 1)]`` for ε ~ N(0, 1): the mean of the training-time gate, strictly
    increasing in μ, so gates that are all but sure still rank by how sure they are.

    With a = −μ/σ and b = (1 − μ)/σ: ``μ·(Φ(b) − Φ(a)) + σ·(φ(a) − φ(b)) + 1 − Φ(b)``.
    """
    a, b = -mu / sigma, (1 - mu) / sigma
    cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
    pdf_a, pdf_b = torch.exp(-0.5 * a * a), torch.exp(-0.5 * b * b)
    density = (pdf_a - pdf_b) / math.sqrt(2 * math.pi)
    return (mu * (cdf_b - cdf_a) + sigma * density + 1 - cdf_b).clamp(0, 1)


def leaky_clamp(x: Tensor, leak: float) -> Tensor:
    """``x.clamp(0, 1)`` in the forward pass; in the backward pass the gradient is 1 inside
    [0, 1] and ``leak`` outside it (a straight-through estimator scaled down where it is clamped)."""
    clamped = x.clamp(0, 1)
    if leak <= 0:
        return clamped
    outside = x - clamped
    return clamped + leak * (outside - outside.detach())


def random_keep(valid: Tensor, p: float) -> Tensor | None:
    """(B, T) bool: each valid token kept with probability ``1 − p``; None when ``p`` is 0."""
    if p <= 0:
        return None
    return torch.rand(valid.shape, device=valid.device) >= p


def mean_pool(tokens: Tensor, valid: Tensor) -> Tensor:
    """(B, T, D) tokens, (B, T) bool -> (B, D) mean over the valid tokens (0 for a row without any)."""
    count = valid.sum(-1, keepdim=True).clamp_min(1).to(tokens.dtype)
    return (tokens * valid.unsqueeze(-1).to(tokens.dtype)).sum(1) / count
