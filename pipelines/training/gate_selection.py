"""Selection epochs: after the model is fit, train only its feature gates against the frozen predictor.

A predictor with room to spare (an MLP projection, token mixing) learns to ignore a noise variable
by itself, so during joint training closing that variable's gate saves no loss and the small
sparsity term loses to the training noise: every gate stays open and the weights say nothing. Once
the predictor is frozen, closing a gate that it does not need costs (almost) no cross-entropy,
while closing one that it needs costs a lot: the sparsity term then separates the two. This is the
selector-against-a-fixed-predictor recipe of REAL-X (Jethani et al., "Have We Learned to Explain?",
AISTATS 2021); the predictor has already been trained on randomly masked inputs (``token_dropout``),
so it predicts sensibly from the subsets the gates choose. The same paper names the risk: a
predictor trained on few masked inputs can read *which* tokens are open, so a selector may encode
the prediction in its choice instead of choosing what matters. The more random masking the
predictor saw, the smaller that risk; check the weights against ground truth where it exists.

The selection is held to the validation split (log-loss after the calibration that training fits
there): the selection epoch with the lowest validation log-loss is kept if that is within
``selection_tolerance`` of the fitted model's; otherwise the fitted model stays as it was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepwe_mm import DeepWeLoss
from deepwe_mm.losses import feature_sparsity
from pipelines.bundles.model_builder import MultimodalModel
from pipelines.cohorts.dataset import Batch, PatientCollator
from pipelines.training.scoring import (
    FeatureWeightMeans,
    autocast,
    calibrated_score,
    collect_logits,
    float_output,
    split_loader,
)
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.train")

# The gates' scores must travel a few units (from surely open to closed) in a few epochs.
SELECTION_LR_FACTOR = 10.0


@dataclass(frozen=True)
class SelectionEpoch:
    """One selection epoch on the validation split (epoch 0 = the fitted model before selection):
    its calibrated log-loss and the mean feature weight over the tokens that counted."""

    epoch: int
    val_log_loss: float
    mean_weight: float

    def to_dict(self) -> dict[str, float]:
        return {"epoch": self.epoch, "val_log_loss": self.val_log_loss, "mean_weight": self.mean_weight}


@dataclass(frozen=True)
class Selection:
    """What the selection epochs did: every epoch (0 = before) and the one whose gates were kept
    (0 = none: the fitted model's gates)."""

    epochs: list[SelectionEpoch]
    kept: int

    def to_dict(self) -> dict[str, Any]:
        return {"kept_epoch": self.kept, "epochs": [row.to_dict() for row in self.epochs]}


def gate_parameters(model: MultimodalModel) -> list[torch.nn.Parameter]:
    """The parameters that decide the feature weights: each gate's scoring network and position
    offsets, and the patient context the gates read (not the baselines, which the predictor uses)."""
    core = model.core
    modules = [gate.score for gate in core.gates if gate.score is not None]
    if core.context is not None:
        modules.append(core.context)
    params = [p for module in modules for p in module.parameters()]
    params += [gate.position_offset for gate in core.gates if gate.position_offset is not None]
    return params


def select_features(
    model: MultimodalModel,
    loss_fn: DeepWeLoss,
    datasets: tuple[Dataset, Dataset],
    collate: PatientCollator,
    config: TrainConfig,
    device: torch.device,
    *,
    progress: bool,
) -> Selection | None:
    """Run ``config.selection_epochs`` selection epochs on ``model`` in place (see the module doc).

    Args:
        model: the fitted model (its best epoch's weights); left with the chosen gates.
        loss_fn: the training loss; its cross-entropy, contrastive and auxiliary parts are kept
            and its sparsity term is replaced by ``config.selection_sparsity`` times the share of
            open gates.
        datasets: the training and validation splits.

    Returns:
        Every selection epoch's validation log-loss and mean feature weight (epoch 0 first) and the
        epoch kept; None without selection epochs or without gates to train.
    """
    params = gate_parameters(model)
    if not params or config.selection_epochs <= 0:
        return None
    train_set, val_set = datasets
    val_loader = split_loader(val_set, collate, config, device, shuffle=False)
    history = [_validation(model, val_loader, device, 0)]
    limit = history[0].val_log_loss + config.selection_tolerance
    chosen, best_state = history[0], _gate_state(params)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    trained: torch.nn.Module = model
    if dist.is_initialized():
        trained = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(params, lr=SELECTION_LR_FACTOR * config.lr, weight_decay=0.0)
    # A gate that is surely open (μ far above 1) gets no gradient through the clamp from either
    # loss; straight-through gradients let the sparsity term move it down to where the
    # cross-entropy can say what closing it costs.
    leaks = [gate.leak for gate in model.core.gates]
    for gate in model.core.gates:
        gate.leak = 1.0
    # The training loss keeps its cross-entropy, contrastive and auxiliary parts; its own sparsity
    # term gives way to the selection's.
    loss_fn.sparsity_scale, loss_fn.unimodal_only = 0.0, False
    steps = config.selection_epochs * len(split_loader(train_set, collate, config, device, shuffle=True))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    try:
        for epoch in range(1, config.selection_epochs + 1):
            loader = split_loader(
                train_set, collate, config, device, shuffle=True, epoch=config.epochs + epoch
            )
            _selection_epoch(
                trained, loss_fn, loader, (optimizer, schedule), params, config, device, epoch, progress
            )
            row = _validation(model, val_loader, device, epoch)
            history.append(row)
            if progress:
                tqdm.write(
                    f"selection epoch {epoch}: val log-loss {row.val_log_loss:.4f}, "
                    f"mean feature weight {row.mean_weight:.2f}"
                )
            if row.val_log_loss <= limit and (chosen.epoch == 0 or row.val_log_loss < chosen.val_log_loss):
                chosen, best_state = row, _gate_state(params)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for gate, leak in zip(model.core.gates, leaks, strict=True):
            gate.leak = leak
    _restore(params, best_state)
    log.info(
        "feature selection: kept selection epoch %d (mean feature weight %.2f, val log-loss %.4f; "
        "%.2f and %.4f before)",
        chosen.epoch,
        chosen.mean_weight,
        chosen.val_log_loss,
        history[0].mean_weight,
        history[0].val_log_loss,
    )
    return Selection(history, chosen.epoch)


def _selection_epoch(
    model: torch.nn.Module,
    loss_fn: DeepWeLoss,
    loader: DataLoader,
    optimiser: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler],
    params: list[torch.nn.Parameter],
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    show: bool,
) -> None:
    """One pass over the training split that updates only ``params`` (the gates); ``model`` may be
    wrapped for distributed training."""
    model.train()
    # The frozen predictor keeps its normalisation statistics too.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    optimizer, schedule = optimiser
    bar = tqdm(loader, desc=f"selection {epoch}", unit="batch", disable=None if show else True, leave=False)
    for batch in bar:
        batch: Batch = batch.to(device)
        with autocast(device):
            output = float_output(model(batch))
        # The training-time weights pass the gradient straight through the clamp (see select_features).
        sparsity = feature_sparsity(output.feature_weights, output.token_masks, loss_fn.config.gate_target)
        total = loss_fn(output, batch.labels).total + config.selection_sparsity * sparsity
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        schedule.step()


def _validation(
    model: MultimodalModel, loader: DataLoader, device: torch.device, epoch: int
) -> SelectionEpoch:
    means = FeatureWeightMeans()
    metrics = calibrated_score(*collect_logits(model, loader, device, means))
    total, count = sum(means.total.values()), sum(means.count.values())
    share = total / count if count else math.nan
    return SelectionEpoch(epoch, float(metrics["log_loss"]), float(share))


def _gate_state(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[torch.nn.Parameter], state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, saved in zip(params, state, strict=True):
            p.copy_(saved)
