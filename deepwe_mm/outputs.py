"""What the DeepWe fusion core returns: logits and every weight, as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DeepWeOutput:
    """Logits, the fused embedding and the weights of all three levels for a batch.

    Token and patient names are the caller's: it knows them, the core returns tensors only.

    Attributes:
        logits: (B, C) class scores; C = ``n_classes`` (2 for binary: softmax over two logits,
            the positive class is column 1).
        fused: (B, H) the patient's fused embedding before the patient graph: what
            :meth:`DeepWe.embed` returns, what the reference cohort stores and what the
            contrastive loss sees.
        feature_weights: modality -> (B, T_m) token weights; exactly 0 on padding, unobserved
            tokens, absent modalities and (in training) modalities hidden by modality dropout.
        token_masks: modality -> (B, T_m) bool, the tokens that counted in this forward (observed
            tokens of a modality that was present and not dropped).
        modality_weights: (B, M) the summary token's attention over modalities averaged over
            heads (1 / present count in the mean-fusion ablation): how the interaction term mixes
            the present modalities; exactly 0 where absent, rows sum to 1. Columns follow
            ``modalities``.
        modality_present: (B, M) bool, the modalities that took part (present with at least one
            observed token, and not dropped).
        modalities: the modality names, in column order.
        neighbours: (B, K) long indices into the reference cohort (at inference), or into the
            training candidate pool (memory bank rows, then batch rows); None without a graph or
            without candidates.
        neighbour_weights: (B, K) edge weights over ``neighbours`` (rows sum to 1), or None.
        open_probabilities: modality -> (B, T_m) each token's probability of passing its gate
            (``Φ(μ/σ)`` for stochastic gates, the weight itself for other kinds; 0 where the token
            did not count): what the sparsity penalty reads. None = ``feature_weights``.
        modality_logits: (B, M, C) additive evidence: a present modality's own head logits, an
            absent modality's learned missing bias; ``logits`` is their sum over M plus the
            interaction term. None without additive fusion.
        encoder_logits: (B, M, C) training only: each modality's encoder head on the mean of its
            ungated tokens (rows where the modality takes no part are meaningless); None in eval
            mode or without encoder heads (``lambda_encoder`` 0).
    """

    logits: Tensor
    fused: Tensor
    feature_weights: dict[str, Tensor]
    token_masks: dict[str, Tensor]
    modality_weights: Tensor
    modality_present: Tensor
    modalities: tuple[str, ...]
    neighbours: Tensor | None = None
    neighbour_weights: Tensor | None = None
    open_probabilities: dict[str, Tensor] | None = None
    modality_logits: Tensor | None = None
    encoder_logits: Tensor | None = None

    def probabilities(self, temperature: float = 1.0) -> Tensor:
        """(B, C) class probabilities, softmax of ``logits / temperature`` (temperature scaling)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return torch.softmax(self.logits / temperature, dim=-1)
