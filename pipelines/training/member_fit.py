"""Fitting one model of a bundle (an ensemble has one per seed): the model and its loss, AdamW with a
linear warm-up and cosine decay, gradient clipping, the regularisers' ramps, early stopping on the
validation score (the same decision on every torchrun rank), the best epoch's weights and a
checkpoint every epoch that ``--resume`` continues from.

Early stopping looks at the validation score with the patient graph attending to the memory bank of
recent training embeddings (building the full reference cohort every epoch would cost a pass over
the training set).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeLoss
from pipelines.bundles.model_builder import MultimodalModel, build_encoders, set_numeric_edges
from pipelines.cohorts.dataset import Batch, PatientCollator
from pipelines.cohorts.prepare import PreparedCohort
from pipelines.common.parallelism import rebalance_threads
from pipelines.training.checkpoint import LoopState, load_checkpoint, save_checkpoint
from pipelines.training.gate_selection import Selection, select_features
from pipelines.training.model_settings import fusion_settings
from pipelines.training.scoring import (
    autocast,
    calibrated_score,
    collect_logits,
    float_output,
    score,
    split_loader,
)
from pipelines.training.teacher import Teacher
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.train")

Optimiser = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]


@dataclass
class MemberFit:
    """One trained member: its model at the best epoch (with its selected gates), its loop state,
    epoch timings and its selection epochs (None without them)."""

    model: MultimodalModel
    loop: LoopState
    epoch_seconds: list[float]
    selection: Selection | None = None


def process_rank() -> int:
    """This process's rank under torchrun (0 without it); rank 0 writes."""
    return dist.get_rank() if dist.is_initialized() else 0


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 5% of the peak."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def ramped(rate: float, epoch: int, ramp_epochs: int) -> float:
    """A regulariser's strength in (0-based) ``epoch``: 0 in the first epoch, rising linearly to
    ``rate`` at epoch ``ramp_epochs`` (full from the start when ``ramp_epochs`` is 0), so the model
    first learns from whole patients and open gates."""
    if ramp_epochs <= 0:
        return rate
    return rate * min(1.0, epoch / ramp_epochs)


def validation_score(logits: tuple[torch.Tensor, torch.Tensor], metric: str) -> dict[str, float]:
    """The validation metrics of an epoch's ``(N, C)`` logits and ``(N,)`` labels; for
    ``calibrated_log_loss`` after the calibration fitted on them."""
    return calibrated_score(*logits) if metric == "calibrated_log_loss" else score(*logits)


def stopping_score(val: dict[str, float], metric: str) -> float:
    """Higher is better: AUROC, or minus the log-loss; -inf when undefined (one class in val)."""
    value = val["auroc"] if metric == "auroc" else -val["log_loss"]
    return value if math.isfinite(value) else float("-inf")


def fit_member(
    prepared: PreparedCohort,
    settings: dict[str, Any],
    config: TrainConfig,
    device: torch.device,
    checkpoints: Path,
    fingerprint: str,
    *,
    resume: bool,
    progress: bool,
    teacher: Teacher | None = None,
) -> MemberFit:
    """Train one model with ``config.seed``: the epoch loop, early stopping and checkpoints.

    Args:
        prepared: the cohort with its preprocessing fitted on the training split.
        settings: the encoders' settings (``config.json``'s ``encoders``).
        checkpoints: this member's checkpoint folder; ``fingerprint``: what a checkpoint must
            match to be resumed from.
        resume: continue from the checkpoint in ``checkpoints`` when it matches.
        progress: show a progress bar and a line per epoch.
        teacher: the training patients' teacher probabilities, learnt from beside the labels
            (weighted by the fusion setting ``lambda_teacher``); None = labels only.
    """
    seed_everything(config.seed)
    model, loss_fn = build_model(prepared, settings, config)
    set_numeric_edges(model, prepared.preprocessing)
    model.to(device)
    loss_fn.to(device)
    collate = PatientCollator(model.encoders)
    train_set, val_set = prepared.dataset("train"), prepared.dataset("val")
    optimizer, scheduler = _optimiser(model, config, len(train_set))
    loop = _starting_loop(checkpoints, model, (optimizer, scheduler), fingerprint, resume=resume)
    trained = model
    if dist.is_initialized():
        trained = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    val_loader = split_loader(val_set, collate, config, device, shuffle=False)
    epoch_seconds: list[float] = []
    while loop.epoch < config.epochs and loop.epochs_without_improvement < config.patience:
        epoch_started = time.perf_counter()
        _ramp_regularisers(model, loss_fn, loop.epoch, config)
        loader = split_loader(train_set, collate, config, device, shuffle=True, epoch=loop.epoch)
        train_loss = train_epoch(
            trained, loss_fn, loader, optimizer, scheduler, config, device, loop, progress, teacher
        )
        val = validation_score(collect_logits(model, val_loader, device), config.early_stopping)
        improved = loop.epoch >= config.unimodal_warmup and _early_stopping_step(
            loop, _shared(stopping_score(val, config.early_stopping))
        )
        if improved and process_rank() == 0:
            save_best(checkpoints, model)
        epoch_seconds.append(time.perf_counter() - epoch_started)
        _record_epoch(
            loop, train_loss, val, improved, progress, config.early_stopping == "calibrated_log_loss"
        )
        loop.epoch += 1
        rebalance_threads()
        if process_rank() == 0:
            save_checkpoint(
                checkpoints,
                model=model,
                core=model.core,
                optimizer=optimizer,
                scheduler=scheduler,
                loop=loop,
                fingerprint=fingerprint,
            )
    load_best(checkpoints, model)
    selection = select_features(
        model, loss_fn, (train_set, val_set), collate, config, device, progress=progress
    )
    return MemberFit(model, loop, epoch_seconds, selection)


def build_model(
    prepared: PreparedCohort, settings: dict[str, Any], config: TrainConfig
) -> tuple[MultimodalModel, DeepWeLoss]:
    """The untrained model (encoders from ``settings``, the fusion core from ``config``) and its loss;
    ``class_weights: balanced`` weighs the classes by their inverse training frequency."""
    encoders = build_encoders(settings)
    class_weights = None
    if config.class_weights == "balanced":
        train_labels = prepared.labels[prepared.splits == "train"]
        counts = np.bincount(train_labels, minlength=len(prepared.classes)).astype(float)
        class_weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).round(6).tolist()
    fusion = fusion_settings(encoders, len(prepared.classes), class_weights, config)
    core = DeepWeConfig.from_dict(fusion)
    if config.unimodal_warmup and not core.additive_fusion:
        raise ValueError(
            "unimodal_warmup needs the per-modality heads of additive fusion; "
            "drop fusion.additive_fusion: false or set unimodal_warmup: 0"
        )
    model = MultimodalModel(encoders, DeepWe(core))
    return model, DeepWeLoss(model.core.config)


def _optimiser(model: MultimodalModel, config: TrainConfig, train_size: int) -> Optimiser:
    """AdamW over the trainable parameters and its warm-up + cosine schedule, stepped per batch (the
    steps of an epoch counted per torchrun rank)."""
    steps_per_epoch = math.ceil(
        train_size / config.batch_size / (dist.get_world_size() if dist.is_initialized() else 1)
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * config.epochs, config.warmup_fraction)
    )
    return optimizer, scheduler


def _starting_loop(
    checkpoints: Path, model: MultimodalModel, optimiser: Optimiser, fingerprint: str, *, resume: bool
) -> LoopState:
    """A fresh loop, or with ``resume`` the loop of the matching checkpoint (model, optimiser and
    schedule restored in place)."""
    if resume:
        optimizer, scheduler = optimiser
        restored = load_checkpoint(
            checkpoints,
            model=model,
            core=model.core,
            optimizer=optimizer,
            scheduler=scheduler,
            fingerprint=fingerprint,
        )
        if restored is not None:
            log.info("resuming at epoch %d", restored.epoch + 1)
            return restored
    return LoopState(history=[])


def _ramp_regularisers(model: MultimodalModel, loss_fn: DeepWeLoss, epoch: int, config: TrainConfig) -> None:
    """Modality dropout and the sparsity penalty at their strengths for ``epoch`` (see :func:`ramped`),
    and whether ``epoch`` belongs to the unimodal warm-up."""
    model.core.modality_dropout = ramped(
        model.core.config.modality_dropout, epoch, config.modality_dropout_ramp
    )
    loss_fn.sparsity_scale = ramped(1.0, epoch, config.sparsity_ramp)
    loss_fn.unimodal_only = epoch < config.unimodal_warmup


def _shared(current: float) -> float:
    """Rank 0's stopping score on every rank, so that every rank takes the same early-stopping decision."""
    if not dist.is_initialized():
        return current
    shared = torch.tensor([current], dtype=torch.float64)
    dist.broadcast(shared, src=0)
    return float(shared)


def _early_stopping_step(loop: LoopState, current: float) -> bool:
    """Update the best score and the patience count with this epoch's score; True when it improved."""
    improved = current > loop.best_score or loop.best_epoch < 0
    if improved:
        loop.best_score, loop.best_epoch, loop.epochs_without_improvement = current, loop.epoch, 0
    else:
        loop.epochs_without_improvement += 1
    return improved


def _record_epoch(
    loop: LoopState, train_loss: float, val: dict[str, float], improved: bool, show: bool, calibrated: bool
) -> None:
    """Append the epoch to the history (metrics.json; ``val_log_loss`` after calibration when
    ``calibrated``) and, with ``show``, print its line."""
    loop.history.append(
        {
            "epoch": loop.epoch + 1,
            "train_loss": train_loss,
            "val_auroc": val["auroc"],
            "val_log_loss": val["log_loss"],
        }
    )
    if show:
        tqdm.write(
            f"epoch {loop.epoch + 1}: train loss {train_loss:.4f}, val log-loss {val['log_loss']:.4f}"
            f"{' (calibrated)' if calibrated else ''}, "
            f"val AUROC {val['auroc']:.4f}" + (" *" if improved else "")
        )


def train_epoch(
    model,
    loss_fn,
    loader,
    optimizer,
    scheduler,
    config,
    device,
    loop: LoopState,
    show: bool,
    teacher: Teacher | None = None,
) -> float:
    """One pass over the training loader; the mean training loss per patient (with a ``teacher``,
    its probabilities of the batch's patients go into the loss)."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(
        loader, desc=f"epoch {loop.epoch + 1}", unit="batch", disable=None if show else True, leave=False
    )
    for batch in bar:
        batch: Batch = batch.to(device)
        with autocast(device):
            output = model(batch)
            taught = None if teacher is None else teacher.targets(batch.indices)
            parts = loss_fn(float_output(output), batch.labels, taught)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        loop.step += 1
        total += parts.total.item() * len(batch.labels)
        count += len(batch.labels)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def save_best(folder: Path, model: MultimodalModel) -> None:
    """The best epoch's weights, written atomically beside the checkpoint."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / "best.tmp")
    )
    os.replace(folder / "best.tmp", folder / "best.safetensors")


def load_best(folder: Path, model: MultimodalModel) -> None:
    """Put the best epoch's weights back into ``model`` (after every rank has finished)."""
    from safetensors.torch import load_file

    if dist.is_initialized():
        dist.barrier()
    state = load_file(str(folder / "best.safetensors"))
    model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in state.items()})
