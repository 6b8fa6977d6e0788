"""Loaders over a split and what a model scores on them: the data loader of training and scoring
(a distributed sampler under torchrun), float32 logits in eval mode, and the metrics of a split."""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from pipelines.bundles.model_builder import MultimodalModel
from pipelines.cohorts.dataset import PatientCollator
from pipelines.common.parallelism import die_with_parent
from pipelines.evaluation.metrics import (
    binary_metrics,
    fit_temperature,
    fit_temperature_and_shift,
    multiclass_auroc,
)
from pipelines.training.train_config import TrainConfig


def autocast(device: torch.device):
    """bf16 autocast on a GPU; nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def float_output(output):
    """The output's logits and embeddings in float32 (the loss runs outside bf16 autocast)."""
    output.logits = output.logits.float()
    output.fused = output.fused.float()
    if output.modality_logits is not None:
        output.modality_logits = output.modality_logits.float()
    if output.encoder_logits is not None:
        output.encoder_logits = output.encoder_logits.float()
    return output


def split_loader(
    dataset: Dataset,
    collate: PatientCollator,
    config: TrainConfig,
    device: torch.device,
    *,
    shuffle: bool,
    epoch: int = 0,
) -> DataLoader:
    """The loader of one split: shuffled (per rank under torchrun) for training, in order otherwise."""
    sampler = None
    if dist.is_initialized() and shuffle:
        sampler = DistributedSampler(dataset, shuffle=True, seed=config.seed, drop_last=False)
        sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    # A last training batch of one patient breaks batch norm on a 1x1 feature map: drop that one
    # patient (a different one each shuffled epoch) rather than fail.
    per_rank = len(sampler) if sampler is not None else len(dataset)
    lone_last = shuffle and per_rank > 1 and per_rank % config.batch_size == 1
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        worker_init_fn=die_with_parent(),
        pin_memory=device.type == "cuda",
        generator=generator,
        drop_last=lone_last,
    )


class FeatureWeightMeans:
    """Each modality's mean feature weight over the tokens that counted (observed tokens of the
    patients that have the modality), gathered batch by batch."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, output) -> None:
        """Count one batch's :class:`deepwe_mm.DeepWeOutput`."""
        for name, weights in output.feature_weights.items():
            counted = output.token_masks[name]
            self.total[name] += float(weights[counted].float().sum())
            self.count[name] += int(counted.sum())

    def means(self) -> dict[str, float]:
        """Modality -> mean weight, for the modalities with a token that counted."""
        return {name: self.total[name] / self.count[name] for name in self.total if self.count[name]}

    def below(self, limit: float) -> dict[str, float]:
        """Modality -> mean weight, for the modalities whose mean is below ``limit``."""
        return {name: mean for name, mean in self.means().items() if mean < limit}

    def above(self, limit: float) -> dict[str, float]:
        """Modality -> mean weight, for the modalities whose mean is above ``limit``."""
        return {name: mean for name, mean in self.means().items() if mean > limit}


@torch.no_grad()
def collect_logits(
    model: MultimodalModel,
    loader: DataLoader,
    device: torch.device,
    weight_means: FeatureWeightMeans | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32 logits and (N,) labels over a loader, in eval mode; the feature weights of the
    same pass are added to ``weight_means`` when given."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        batch = batch.to(device)
        with autocast(device):
            output = model(batch)
        logits.append(output.logits.float().cpu())
        labels.append(batch.labels.cpu())
        if weight_means is not None:
            weight_means.add(output)
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def collect_tree_log_odds(model: MultimodalModel, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """(N, C) float64 log-odds of the model's trees (before their weight) over a loader."""
    if model.trees is None:
        raise ValueError("the model has no trees")
    log_odds = []
    for batch in loader:
        batch = batch.to(device)
        log_odds.append(model.trees.log_odds(model.scalar_features(batch)).cpu())
    return torch.cat(log_odds)


def score(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """Binary: AUROC/AUPRC/Brier/ECE of the positive class; multiclass: macro AUROC; both: log-loss."""
    scaled = logits / temperature
    probabilities = torch.softmax(scaled, dim=1).numpy()
    log_loss = float(torch.nn.functional.cross_entropy(scaled, labels)) if len(labels) else math.nan
    y = labels.numpy()
    if probabilities.shape[1] == 2:
        return binary_metrics(y, probabilities[:, 1]) | {"log_loss": log_loss}
    return {"auroc": multiclass_auroc(y, probabilities), "log_loss": log_loss, "n": len(y)}


def fit_calibration(val_logits: torch.Tensor, val_labels: torch.Tensor, binary: bool) -> tuple[float, float]:
    """Temperature and positive-logit shift on the validation split (shift 0 unless binary with both
    classes in validation)."""
    if binary and val_labels.unique().numel() == 2:
        return fit_temperature_and_shift(val_logits, val_labels)
    return fit_temperature(val_logits, val_labels), 0.0


def shifted(logits: torch.Tensor, shift: float) -> torch.Tensor:
    """(N, 2) logits with ``shift`` added to the positive class's."""
    return logits + torch.tensor([0.0, shift]) if shift else logits


def calibrated_score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """:func:`score` after the calibration that training fits on these same logits (validation)."""
    temperature, shift = fit_calibration(logits, labels, logits.shape[1] == 2)
    return score(shifted(logits, shift), labels, temperature)
