"""``deepwe train``: fit a DeepWe model on a cohort and write a model bundle.

AdamW with a linear warm-up and cosine decay, gradient clipping, early stopping on validation
log-loss (or AUROC),
a checkpoint every epoch (``--resume`` continues from it), temperature scaling and a decision
threshold on the validation split, a reference cohort of training patients for the patient graph,
and test metrics. The same code runs on CPU and on a GPU (bf16 autocast there), and under
``torchrun`` with several processes (DDP; rank 0 writes).

Early stopping looks at the validation score with the patient graph attending to the memory bank of
recent training embeddings (building the full reference cohort every epoch would cost a pass over
the training set); the final calibration and test metrics use the fixed reference cohort, exactly
as prediction will.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeLoss
from encoders import create_encoder
from pipelines.bundles.bundle_io import training_fingerprint, write_bundle
from pipelines.bundles.model_builder import (
    MultimodalModel,
    ensemble_model,
    set_numeric_edges,
    text_model_identity,
)
from pipelines.bundles.model_card import render_model_card
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import Batch, PatientCollator
from pipelines.cohorts.prepare import PreparedCohort, prepare_cohort, validated_cohort
from pipelines.common.devices import pick_device
from pipelines.evaluation.metrics import (
    binary_metrics,
    choose_threshold,
    fit_temperature,
    fit_temperature_and_shift,
    multiclass_auroc,
)
from pipelines.training.checkpoint import LoopState, load_checkpoint, save_checkpoint
from pipelines.training.model_settings import encoder_settings, fusion_settings
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.train")
CHECKPOINTS = ".checkpoints"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` wrote and measured.

    Attributes:
        bundle: the model bundle's folder.
        metrics: what the bundle's metrics.json holds (splits, history, calibration).
        seconds: wall-clock seconds of the whole call (reading, training, calibration, writing).
        epochs_run: epochs trained in all, counting those before a resume.
        epoch_seconds: wall-clock seconds of each epoch trained in this call (training pass and
            validation), kept apart from ``metrics`` so that a resumed run's history stays identical
            to an uninterrupted one's.
    """

    bundle: Path
    metrics: dict[str, Any]
    seconds: float
    epochs_run: int
    epoch_seconds: tuple[float, ...] = ()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _loader(
    dataset: Dataset,
    collate: PatientCollator,
    config: TrainConfig,
    device: torch.device,
    *,
    shuffle: bool,
    epoch: int = 0,
) -> DataLoader:
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
        pin_memory=device.type == "cuda",
        generator=generator,
        drop_last=lone_last,
    )


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 5% of the peak."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def collect_logits(
    model: MultimodalModel, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32 logits and (N,) labels over a loader, in eval mode."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        batch = batch.to(device)
        with _autocast(device):
            output = model(batch)
        logits.append(output.logits.float().cpu())
        labels.append(batch.labels.cpu())
    return torch.cat(logits), torch.cat(labels)


def score(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """Binary: AUROC/AUPRC/Brier/ECE of the positive class; multiclass: macro AUROC; both: log-loss."""
    scaled = logits / temperature
    probabilities = torch.softmax(scaled, dim=1).numpy()
    log_loss = float(torch.nn.functional.cross_entropy(scaled, labels)) if len(labels) else math.nan
    y = labels.numpy()
    if probabilities.shape[1] == 2:
        return binary_metrics(y, probabilities[:, 1]) | {"log_loss": log_loss}
    return {"auroc": multiclass_auroc(y, probabilities), "log_loss": log_loss, "n": len(y)}


def _stopping_score(val: dict[str, float], metric: str) -> float:
    """Higher is better: AUROC, or minus the log-loss; -inf when undefined (one class in val)."""
    value = val["auroc"] if metric == "auroc" else -val["log_loss"]
    return value if math.isfinite(value) else float("-inf")


def _fingerprint(data: str, config: TrainConfig, settings: dict[str, Any]) -> str:
    text = json.dumps(
        {"data": data, "config": config.to_dict(), "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def train(
    spec_path: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    cohort: Cohort | None = None,
) -> TrainResult:
    """Train on the cohort at ``spec_path`` and write the bundle to ``out``.

    Args:
        cohort: the cohort already validated and loaded from ``spec_path``, possibly cut to some
            of its rows (``deepwe tune`` leaves the test rows out); read from ``spec_path`` when None.

    Raises:
        SpecError: the cohort does not validate (the same report as ``deepwe validate``).
        CohortError: the cohort cannot be trained on (one class, too few patients).
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    out = Path(out)
    torch_device = pick_device(device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    cohort = cohort if cohort is not None else validated_cohort(spec_path)
    text_cache = config.text_cache or str(out.parent / ".text-cache")
    prepared = prepare_cohort(
        cohort,
        text_cache=text_cache,
        sensor_token_choice=config.encoders.get("sensor", {}).get("tokens"),
        bins=config.bins,
    )
    settings = encoder_settings(cohort.spec, prepared.preprocessing, config)
    data_fingerprint = training_fingerprint(cohort.spec, cohort.table_bytes())
    fingerprint = _fingerprint(data_fingerprint, config, settings)
    checkpoints = out.parent / f"{out.name}{CHECKPOINTS}"
    if not resume and rank == 0:
        shutil.rmtree(checkpoints, ignore_errors=True)
    fits = []
    for member in range(config.ensemble):
        if config.ensemble > 1 and rank == 0 and progress:
            tqdm.write(f"ensemble member {member + 1} of {config.ensemble} (seed {config.seed + member})")
        folder = checkpoints / f"member-{member}" if config.ensemble > 1 else checkpoints
        fits.append(
            _fit_member(
                prepared,
                settings,
                replace(config, seed=config.seed + member),
                torch_device,
                folder,
                f"{fingerprint}-{member}",
                resume=resume,
                progress=progress and rank == 0,
            )
        )
    model = fits[0].model if len(fits) == 1 else ensemble_model([fit.model for fit in fits])
    prepared.preprocessing["text_models"] = text_model_identity(model)
    collate = PatientCollator(model.encoders)
    # The reference cohort first: calibration and test must see the model as it will predict.
    reference, reference_ids = _reference_cohort(model, prepared, collate, config, torch_device)
    metrics, calibration = _calibrate_and_test(model, prepared, collate, config, torch_device, fits)
    if rank == 0:
        write_bundle(
            out,
            spec=cohort.spec,
            data_fingerprint=data_fingerprint,
            config={
                "encoders": settings,
                "fusion": model.core.config.to_dict(),
                "ensemble": config.ensemble,
                "train": config.to_dict(),
            },
            weights=model.state_dict(),
            preprocessing=prepared.preprocessing,
            reference=reference,
            reference_ids=reference_ids,
            calibration=calibration,
            metrics=metrics,
            model_card=render_model_card(cohort.spec, prepared, metrics, calibration, config),
        )
        shutil.rmtree(checkpoints, ignore_errors=True)
    epochs = sum(fit.loop.epoch for fit in fits)
    seconds = tuple(s for fit in fits for s in fit.epoch_seconds)
    return TrainResult(out, metrics, time.perf_counter() - started, epochs, seconds)


@dataclass
class _Fit:
    """One trained member: its model at the best epoch, its loop state and epoch timings."""

    model: MultimodalModel
    loop: LoopState
    epoch_seconds: list[float]


def _fit_member(
    prepared: PreparedCohort,
    settings: dict[str, Any],
    config: TrainConfig,
    device: torch.device,
    checkpoints: Path,
    fingerprint: str,
    *,
    resume: bool,
    progress: bool,
) -> _Fit:
    """Train one model with ``config.seed``: the epoch loop, early stopping and checkpoints."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    seed_everything(config.seed)
    model, loss_fn = _build(prepared, settings, config)
    set_numeric_edges(model, prepared.preprocessing)
    model.to(device)
    loss_fn.to(device)
    collate = PatientCollator(model.encoders)
    train_set, val_set = prepared.dataset("train"), prepared.dataset("val")
    steps_per_epoch = math.ceil(
        len(train_set) / config.batch_size / (dist.get_world_size() if dist.is_initialized() else 1)
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * config.epochs, config.warmup_fraction)
    )
    loop = LoopState(history=[])
    if resume:
        restored = load_checkpoint(
            checkpoints,
            model=model,
            core=model.core,
            optimizer=optimizer,
            scheduler=scheduler,
            fingerprint=fingerprint,
        )
        if restored is not None:
            loop = restored
            log.info("resuming at epoch %d", loop.epoch + 1)
    trained = model
    if dist.is_initialized():
        trained = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    val_loader = _loader(val_set, collate, config, device, shuffle=False)
    epoch_seconds: list[float] = []
    while loop.epoch < config.epochs and loop.epochs_without_improvement < config.patience:
        epoch_started = time.perf_counter()
        model.core.modality_dropout = ramped(
            model.core.config.modality_dropout, loop.epoch, config.modality_dropout_ramp
        )
        loss_fn.sparsity_scale = ramped(1.0, loop.epoch, config.sparsity_ramp)
        loader = _loader(train_set, collate, config, device, shuffle=True, epoch=loop.epoch)
        train_loss = _train_epoch(
            trained, loss_fn, loader, optimizer, scheduler, config, device, loop, progress
        )
        val = score(*collect_logits(model, val_loader, device))
        current = _stopping_score(val, config.early_stopping)
        if dist.is_initialized():  # every rank must take the same early-stopping decision: rank 0's
            shared = torch.tensor([current], dtype=torch.float64)
            dist.broadcast(shared, src=0)
            current = float(shared)
        improved = current > loop.best_score or loop.best_epoch < 0
        if improved:
            loop.best_score, loop.best_epoch, loop.epochs_without_improvement = current, loop.epoch, 0
            if rank == 0:
                _save_best(checkpoints, model)
        else:
            loop.epochs_without_improvement += 1
        loop.history.append(
            {
                "epoch": loop.epoch + 1,
                "train_loss": train_loss,
                "val_auroc": val["auroc"],
                "val_log_loss": val["log_loss"],
            }
        )
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if progress:
            tqdm.write(
                f"epoch {loop.epoch + 1}: train loss {train_loss:.4f}, val log-loss {val['log_loss']:.4f}, "
                f"val AUROC {val['auroc']:.4f}" + (" *" if improved else "")
            )
        loop.epoch += 1
        if rank == 0:
            save_checkpoint(
                checkpoints,
                model=model,
                core=model.core,
                optimizer=optimizer,
                scheduler=scheduler,
                loop=loop,
                fingerprint=fingerprint,
            )
    _load_best(checkpoints, model)
    return _Fit(model, loop, epoch_seconds)


def _build(
    prepared: PreparedCohort, settings: dict[str, Any], config: TrainConfig
) -> tuple[MultimodalModel, DeepWeLoss]:
    encoders = {name: create_encoder(s["encoder"], **s["config"]) for name, s in settings.items()}
    class_weights = None
    if config.class_weights == "balanced":
        train_labels = prepared.labels[prepared.splits == "train"]
        counts = np.bincount(train_labels, minlength=len(prepared.classes)).astype(float)
        class_weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).round(6).tolist()
    fusion = fusion_settings(encoders, len(prepared.classes), class_weights, config)
    model = MultimodalModel(encoders, DeepWe(DeepWeConfig.from_dict(fusion)))
    return model, DeepWeLoss(model.core.config)


def _train_epoch(
    model, loss_fn, loader, optimizer, scheduler, config, device, loop: LoopState, show: bool
) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(
        loader, desc=f"epoch {loop.epoch + 1}", unit="batch", disable=None if show else True, leave=False
    )
    for batch in bar:
        batch: Batch = batch.to(device)
        with _autocast(device):
            output = model(batch)
            parts = loss_fn(_float_output(output), batch.labels)
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


def ramped(rate: float, epoch: int, ramp_epochs: int) -> float:
    """A regulariser's strength in (0-based) ``epoch``: 0 in the first epoch, rising linearly to
    ``rate`` at epoch ``ramp_epochs`` (full from the start when ``ramp_epochs`` is 0), so the model
    first learns from whole patients and open gates."""
    if ramp_epochs <= 0:
        return rate
    return rate * min(1.0, epoch / ramp_epochs)


def _float_output(output):
    output.logits = output.logits.float()
    output.fused = output.fused.float()
    if output.modality_logits is not None:
        output.modality_logits = output.modality_logits.float()
    return output


def _save_best(folder: Path, model: MultimodalModel) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / "best.tmp")
    )
    os.replace(folder / "best.tmp", folder / "best.safetensors")


def _load_best(folder: Path, model: MultimodalModel) -> None:
    from safetensors.torch import load_file

    if dist.is_initialized():
        dist.barrier()
    state = load_file(str(folder / "best.safetensors"))
    model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in state.items()})


def _fit_calibration(val_logits: torch.Tensor, val_labels: torch.Tensor, binary: bool) -> tuple[float, float]:
    """Temperature and positive-logit shift on the validation split (shift 0 unless binary with both
    classes in validation)."""
    if binary and val_labels.unique().numel() == 2:
        return fit_temperature_and_shift(val_logits, val_labels)
    return fit_temperature(val_logits, val_labels), 0.0


def _shifted(logits: torch.Tensor, shift: float) -> torch.Tensor:
    return logits + torch.tensor([0.0, shift]) if shift else logits


def _calibrate_and_test(model, prepared, collate, config, device, fits: list[_Fit]) -> tuple[dict, dict]:
    def logits_of(net, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return collect_logits(
            net, _loader(prepared.dataset(split), collate, config, device, shuffle=False), device
        )

    binary = len(prepared.classes) == 2
    has_test = bool((prepared.splits == "test").any())
    members = []
    if len(fits) > 1:  # each member scored alone, calibrated as a one-model bundle would be
        for i, fit in enumerate(fits):
            member_val = logits_of(fit.model, "val")
            temperature, shift = _fit_calibration(*member_val, binary)
            scored = {
                "seed": config.seed + i,
                "best_epoch": fit.loop.best_epoch + 1,
                "epochs_run": fit.loop.epoch,
            }
            scored["epoch_seconds_total"] = round(sum(fit.epoch_seconds), 1)
            scored |= {
                "history": fit.loop.history,
                "val": score(_shifted(member_val[0], shift), member_val[1], temperature),
            }
            if has_test:
                member_test = logits_of(fit.model, "test")
                scored["test"] = score(_shifted(member_test[0], shift), member_test[1], temperature)
            members.append(scored)
    val_logits, val_labels = logits_of(model, "val")
    uncalibrated = score(val_logits, val_labels)
    temperature, shift = _fit_calibration(val_logits, val_labels, binary)
    if shift:
        model.core.shift_positive_logit(shift)
        val_logits = _shifted(val_logits, shift)
        method = (
            "temperature and a positive-logit shift (Platt scaling) fitted on the validation split; "
            "the shift is folded into the output layer's bias"
        )
    else:
        method = "temperature scaling on the validation split (Guo et al. 2017)"
    calibration: dict[str, Any] = {
        "temperature": temperature,
        "logit_shift": shift,
        "method": method,
        "classes": prepared.classes,
    }
    loop = fits[0].loop
    metrics: dict[str, Any] = {
        "best_epoch": loop.best_epoch + 1,
        "epochs_run": loop.epoch,
        "history": loop.history,
        "val_uncalibrated": uncalibrated,
        "val": score(val_logits, val_labels, temperature),
        "split_sizes": {s: int((prepared.splits == s).sum()) for s in ("train", "val", "test")},
    }
    if binary:
        risk = torch.softmax(val_logits / temperature, dim=1)[:, 1].numpy()
        threshold = choose_threshold(val_labels.numpy(), risk, target_sensitivity=config.target_sensitivity)
        calibration["threshold"] = {
            "value": threshold.value,
            "rule": threshold.rule,
            "val_sensitivity": threshold.sensitivity,
            "val_specificity": threshold.specificity,
        }
    if members:
        metrics["members"] = members
    if has_test:
        metrics["test"] = score(*logits_of(model, "test"), temperature)
    return metrics, calibration


@torch.no_grad()
def _reference_cohort(model, prepared, collate, config, device) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fused embeddings of the training patients, with pseudonymous ids (``R00001``...) and outcomes."""
    model.eval()
    loader = _loader(prepared.dataset("train"), collate, config, device, shuffle=False)
    embeddings, labels = [], []
    for batch in loader:
        batch = batch.to(device)
        embeddings.append(model.embed(batch).float().cpu())
        labels.append(batch.labels.cpu())
    reference = {"embeddings": torch.cat(embeddings), "labels": torch.cat(labels)}
    ids = [f"R{i + 1:05d}" for i in range(reference["embeddings"].shape[0])]
    model.core.set_reference(reference["embeddings"].to(device), ids, reference["labels"].to(device))
    return reference, ids
