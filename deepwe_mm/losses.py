"""The DeepWe loss: L = CE + λ1 · supervised contrastive + λ2 · sparsity + λ3 · per-modality CE
+ λ4 · encoder-head CE."""

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


def feature_sparsity(
    open_probabilities: Mapping[str, Tensor], token_masks: Mapping[str, Tensor], target: float | None = None
) -> Tensor:
    """The expected share of open gates over the tokens that counted, beyond ``target``.

    With stochastic gates the open probabilities are ``Φ(μ/σ)``, so the plain share is the expected
    L0 norm divided by the token count (Louizos et al. 2018; Yamada et al. 2020). With a target,
    each patient's share is penalised only above it: ``mean_b max(0, share_b − target)``.

    Args:
        open_probabilities: modality -> (B, T_m) probabilities (or weights) in [0, 1].
        token_masks: modality -> (B, T_m) bool, the tokens that counted.
        target: the share of tokens allowed open for free, or None.

    Returns:
        Scalar in [0, 1].
    """
    names = list(open_probabilities)
    opened = torch.cat([torch.where(token_masks[m], open_probabilities[m], 0.0) for m in names], dim=1)
    counted = torch.cat([token_masks[m] for m in names], dim=1)  # (B, Σ T_m)
    if target is None:
        return opened.sum() / counted.sum().clamp_min(1)
    share = opened.sum(-1) / counted.sum(-1).clamp_min(1)
    return torch.relu(share - target).mean()


def auxiliary_cross_entropy(modality_logits: Tensor, present: Tensor, targets: Tensor) -> Tensor:
    """Mean over modalities of each modality head's own cross-entropy, on the patients that have it.

    Each head is asked to predict the outcome alone, so no encoder can idle while an easier
    modality carries the joint loss.

    Args:
        modality_logits: (B, M, C) per-modality logits (absent slots are ignored).
        present: (B, M) bool, the modalities that took part.
        targets: (B,) long classes.

    Returns:
        Scalar; 0 when no modality is present anywhere.
    """
    losses = [
        F.cross_entropy(modality_logits[present[:, i], i], targets[present[:, i]])
        for i in range(modality_logits.shape[1])
        if present[:, i].any()
    ]
    if not losses:
        return modality_logits.new_zeros(())
    return torch.stack(losses).mean()


def soft_cross_entropy(logits: Tensor, probabilities: Tensor) -> Tensor:
    """Mean cross-entropy of (B, C) logits against (B, C) target class probabilities (rows sum to 1)."""
    return -(probabilities * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


@dataclass
class LossParts:
    """The total loss and its unweighted parts (scalars); ``total = ce + λ1·con + λ2·sp + λ3·aux +
    λ4·enc + λ5·teacher`` (in a unimodal warm-up ``aux + λ2·sp + λ4·enc``).

    A part that the config turns off is 0.
    """

    total: Tensor
    cross_entropy: Tensor
    contrastive: Tensor
    sparsity: Tensor
    auxiliary: Tensor
    encoder: Tensor
    teacher: Tensor


class DeepWeLoss(nn.Module):
    """``L = CE + λ1 · L_con + λ2 · L_sp + λ3 · L_aux + λ4 · L_enc + λ5 · L_teacher`` as set by a
    :class:`DeepWeConfig`.

    Args:
        config: n_classes, class_weights, the use_contrastive / use_sparsity switches, the lambdas
            (λ3 = ``lambda_auxiliary``, used with additive fusion; λ4 = ``lambda_encoder``; λ5 =
            ``lambda_teacher``, used when the batch comes with a teacher's probabilities),
            ``gate_target`` and the contrastive temperature.
    """

    class_weights: Tensor | None

    def __init__(self, config: DeepWeConfig) -> None:
        super().__init__()
        self.config = config
        # The training loop may ramp the sparsity term in (0 = off, 1 = λ2 in full), and may ask
        # for the modality heads' own cross-entropy alone (a unimodal warm-up).
        self.sparsity_scale = 1.0
        self.unimodal_only = False
        weights = None if config.class_weights is None else torch.tensor(config.class_weights)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, output: DeepWeOutput, targets: Tensor, teacher: Tensor | None = None) -> LossParts:
        """Loss of a batch.

        Args:
            output: the model's output for the batch.
            targets: (B,) long class indices in [0, C).
            teacher: optional (B, C) class probabilities of a teacher model for the same patients
                (distillation: the cross-entropy against them, weighted by ``lambda_teacher``).

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
        opened = output.open_probabilities or output.feature_weights
        sp = feature_sparsity(opened, output.token_masks, config.gate_target) if config.use_sparsity else zero
        if self.unimodal_only and output.modality_logits is None:
            raise ValueError("a unimodal warm-up needs the per-modality heads of additive fusion")
        aux = zero
        if output.modality_logits is not None and (config.lambda_auxiliary > 0 or self.unimodal_only):
            aux = auxiliary_cross_entropy(output.modality_logits, output.modality_present, targets)
        enc = (
            zero
            if output.encoder_logits is None
            else auxiliary_cross_entropy(output.encoder_logits, output.modality_present, targets)
        )
        taught = zero
        if teacher is not None and config.lambda_teacher > 0:
            if teacher.shape != output.logits.shape:
                raise ValueError(
                    f"teacher probabilities must be {tuple(output.logits.shape)}, got {tuple(teacher.shape)}"
                )
            taught = soft_cross_entropy(output.logits, teacher.to(output.logits.dtype))
        if self.unimodal_only:
            total = aux + self.sparsity_scale * config.lambda_sparsity * sp
        else:
            total = (
                ce
                + config.lambda_contrastive * con
                + self.sparsity_scale * config.lambda_sparsity * sp
                + config.lambda_auxiliary * aux
                + config.lambda_teacher * taught
            )
        total = total + config.lambda_encoder * enc
        return LossParts(
            total=total,
            cross_entropy=ce,
            contrastive=con,
            sparsity=sp,
            auxiliary=aux,
            encoder=enc,
            teacher=taught,
        )
