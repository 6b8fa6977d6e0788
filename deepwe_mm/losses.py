"""The DeepWe loss: L = CE (class-weighted) + λ1 · supervised contrastive + λ2 · sparsity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepwe_mm.config import DeepWeConfig
from deepwe_mm.outputs import DeepWeOutput


def supervised_contrastive_loss(embeddings: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form) on L2-normalised embeddings.

    For each anchor i with at least one other patient of its class, the mean over its positives p of
    ``-log( exp(s_ip / τ) / sum_{a != i} exp(s_ia / τ) )`` with s the cosine similarity; averaged
    over those anchors.

    Args:
        embeddings: (B, H) embeddings (normalised here).
        labels: (B,) integer classes.
        temperature: τ > 0.

    Returns:
        Scalar; 0 when no anchor has a positive (e.g. a batch with one patient per class).
    """
    z = F.normalize(embeddings, dim=-1)
    self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    similarity = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=-1, keepdim=True)
    positive = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_pair
    n_positive = positive.sum(-1)
    anchors = n_positive > 0
    if not anchors.any():
        return embeddings.new_zeros(())
    # where, not a product: the diagonal of log_prob is -inf.
    summed = torch.where(positive, log_prob, torch.zeros((), dtype=z.dtype, device=z.device)).sum(-1)
    return -(summed[anchors] / n_positive[anchors]).mean()


def feature_sparsity(feature_weights: Mapping[str, Tensor], token_masks: Mapping[str, Tensor]) -> Tensor:
    """Mean feature weight over the tokens that counted, across all modalities.

    Args:
        feature_weights: modality -> (B, T_m) weights.
        token_masks: modality -> (B, T_m) bool, the tokens that counted.

    Returns:
        Scalar in [0, 1].
    """
    total = sum(torch.where(token_masks[m], w, 0.0).sum() for m, w in feature_weights.items())
    count = sum(token_masks[m].sum() for m in feature_weights)
    return total / count.clamp_min(1)


@dataclass
class LossParts:
    """The total loss and its unweighted parts (scalars); ``total = ce + λ1·con + λ2·sp``.

    A part that the config turns off is 0.
    """

    total: Tensor
    cross_entropy: Tensor
    contrastive: Tensor
    sparsity: Tensor


class DeepWeLoss(nn.Module):
    """``L = CE + λ1 · L_con + λ2 · L_sp`` as set by a :class:`DeepWeConfig`.

    Args:
        config: n_classes, class_weights, the use_contrastive / use_sparsity switches, the lambdas
            and the contrastive temperature.
    """

    def __init__(self, config: DeepWeConfig) -> None:
        super().__init__()
        self.config = config
        weights = None if config.class_weights is None else torch.tensor(config.class_weights)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, output: DeepWeOutput, targets: Tensor) -> LossParts:
        """Loss of a batch.

        Args:
            output: the model's output for the batch.
            targets: (B,) long class indices in [0, C).

        Raises:
            ValueError: targets of the wrong shape, dtype or range.
        """
        batch, n_classes = output.logits.shape
        if targets.shape != (batch,) or targets.dtype != torch.long:
            raise ValueError(f"targets must be long ({batch},), got {targets.dtype} {tuple(targets.shape)}")
        if batch and (targets.min() < 0 or targets.max() >= n_classes):
            raise ValueError(f"targets must lie in [0, {n_classes}), got {targets.unique().tolist()}")
        config = self.config
        weight = None if self.class_weights is None else self.class_weights.to(output.logits.dtype)
        ce = F.cross_entropy(output.logits, targets, weight=weight)
        zero = output.logits.new_zeros(())
        con = (
            supervised_contrastive_loss(output.fused, targets, config.contrastive_temperature)
            if config.use_contrastive
            else zero
        )
        sp = feature_sparsity(output.feature_weights, output.token_masks) if config.use_sparsity else zero
        total = ce + config.lambda_contrastive * con + config.lambda_sparsity * sp
        return LossParts(total=total, cross_entropy=ce, contrastive=con, sparsity=sp)
