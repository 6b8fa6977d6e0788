"""``deepwe train``: fit a DeepWe model on a cohort and write a model bundle.

:func:`train` runs named steps: prepare the cohort (preprocessing fitted on the training split),
fit each model of the bundle (:mod:`pipelines.training.member_fit`: AdamW with a linear warm-up and
cosine decay, gradient clipping, early stopping on validation log-loss (or AUROC), a checkpoint
every epoch that ``--resume`` continues from), build the reference cohort of training patients for
the patient graph, calibrate on the validation split and score the test split
(:mod:`pipelines.training.calibrate`), and write the bundle. The same code runs on CPU and on a GPU
(bf16 autocast there), and under ``torchrun`` with several processes (DDP; rank 0 writes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from data_schemas import CohortSpec
from deepwe_mm import DeepWeConfig
from deepwe_mm.tree_evidence import TreeEvidence
from pipelines.bundles.bundle_io import training_fingerprint, write_bundle
from pipelines.bundles.model_builder import MultimodalModel, ensemble_model, text_model_identity
from pipelines.bundles.model_card import render_model_card
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import PreparedCohort, prepare_cohort, validated_cohort
from pipelines.common.devices import pick_device
from pipelines.training.calibrate import calibrate_and_test, reference_cohort
from pipelines.training.member_fit import MemberFit, fit_member, process_rank
from pipelines.training.model_settings import encoder_settings
from pipelines.training.teacher import Teacher, fit_teacher
from pipelines.training.train_config import TrainConfig

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


@dataclass(frozen=True)
class _TrainingData:
    """The prepared cohort and what identifies a training run on it.

    Attributes:
        spec: the cohort spec.
        prepared: the cohort with its preprocessing fitted on the training split.
        settings: the encoders' settings (``config.json``'s ``encoders``).
        data_fingerprint: the training data's fingerprint (the manifest's).
        fingerprint: data, config and settings together: what a checkpoint must match to resume.
    """

    spec: CohortSpec
    prepared: PreparedCohort
    settings: dict[str, Any]
    data_fingerprint: str
    fingerprint: str


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
    cohort = cohort if cohort is not None else validated_cohort(spec_path)
    data = _prepare(cohort, out, config)
    checkpoints = _checkpoint_folder(out, resume=resume)
    teacher = _teacher(data, config, progress=progress)
    fits = _fit_members(
        data, config, torch_device, checkpoints, resume=resume, progress=progress, teacher=teacher
    )
    model = fits[0].model if len(fits) == 1 else ensemble_model([fit.model for fit in fits])
    model.attach_trees(_tree_evidence(teacher, config, torch_device))
    data.prepared.preprocessing["text_models"] = text_model_identity(model)
    collate = PatientCollator(model.encoders)
    # The reference cohort first: calibration and test must see the model as it will predict.
    reference, reference_ids = reference_cohort(model, data.prepared, collate, config, torch_device)
    metrics, calibration = calibrate_and_test(model, data.prepared, collate, config, torch_device, fits)
    if teacher is not None:
        metrics["teacher"] = teacher.summary()
    if process_rank() == 0:
        _write(out, data, model, config, (reference, reference_ids), metrics, calibration)
        shutil.rmtree(checkpoints, ignore_errors=True)
    epochs = sum(fit.loop.epoch for fit in fits)
    seconds = tuple(s for fit in fits for s in fit.epoch_seconds)
    return TrainResult(out, metrics, time.perf_counter() - started, epochs, seconds)


def _prepare(cohort: Cohort, out: Path, config: TrainConfig) -> _TrainingData:
    """Fit the preprocessing on the training split, derive the encoders' settings, and fingerprint
    the data and the run (the text cache defaults to ``.text-cache`` beside ``out``)."""
    text_cache = config.text_cache or str(out.parent / ".text-cache")
    prepared = prepare_cohort(
        cohort,
        text_cache=text_cache,
        sensor_token_choice=config.encoders.get("sensor", {}).get("tokens"),
        sensor_trajectory=bool(config.encoders.get("sensor", {}).get("trajectory", True)),
        bins=config.bins,
    )
    settings = encoder_settings(cohort.spec, prepared.preprocessing, config)
    data_fingerprint = training_fingerprint(cohort.spec, cohort.table_bytes())
    fingerprint = _fingerprint(data_fingerprint, config, settings)
    return _TrainingData(cohort.spec, prepared, settings, data_fingerprint, fingerprint)


def _fingerprint(data: str, config: TrainConfig, settings: dict[str, Any]) -> str:
    text = json.dumps(
        {"data": data, "config": config.to_dict(), "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _checkpoint_folder(out: Path, *, resume: bool) -> Path:
    """``<out>.checkpoints`` beside the bundle; emptied (by rank 0) unless resuming."""
    checkpoints = out.parent / f"{out.name}{CHECKPOINTS}"
    if not resume and process_rank() == 0:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return checkpoints


def _teacher(data: _TrainingData, config: TrainConfig, *, progress: bool) -> Teacher | None:
    """The gradient-boosting teacher of the training patients when the fusion setting
    ``lambda_teacher`` is above 0 (:mod:`pipelines.training.teacher`), else None."""
    if config.fusion.get("lambda_teacher", DeepWeConfig.lambda_teacher) <= 0:
        return None
    teacher = fit_teacher(data.prepared, data.settings, config.batch_size, config.seed)
    if teacher is not None and progress and process_rank() == 0:
        tqdm.write(teacher.describe())
    return teacher


def _tree_evidence(teacher: Teacher | None, config: TrainConfig, device: torch.device) -> TreeEvidence | None:
    """The teacher's trees as the model's tree evidence (weight 0 until calibration chooses one),
    when the fusion setting ``tree_evidence`` is on."""
    wanted = config.fusion.get("tree_evidence", DeepWeConfig.tree_evidence)
    if not wanted or teacher is None or teacher.trees is None:
        return None
    return TreeEvidence.from_arrays(teacher.trees).to(device)


def _fit_members(
    data: _TrainingData,
    config: TrainConfig,
    device: torch.device,
    checkpoints: Path,
    *,
    resume: bool,
    progress: bool,
    teacher: Teacher | None,
) -> list[MemberFit]:
    """Fit the ``config.ensemble`` models, member i with seed ``config.seed + i`` and its own
    checkpoint folder (``member-i``) when there are several."""
    rank = process_rank()
    fits = []
    for member in range(config.ensemble):
        if config.ensemble > 1 and rank == 0 and progress:
            tqdm.write(f"ensemble member {member + 1} of {config.ensemble} (seed {config.seed + member})")
        folder = checkpoints / f"member-{member}" if config.ensemble > 1 else checkpoints
        fits.append(
            fit_member(
                data.prepared,
                data.settings,
                replace(config, seed=config.seed + member),
                device,
                folder,
                f"{data.fingerprint}-{member}",
                resume=resume,
                progress=progress and rank == 0,
                teacher=teacher,
            )
        )
    return fits


def _write(
    out: Path,
    data: _TrainingData,
    model: MultimodalModel,
    config: TrainConfig,
    reference: tuple[dict[str, torch.Tensor], list[str]],
    metrics: dict[str, Any],
    calibration: dict[str, Any],
) -> None:
    """Write the model bundle: config, weights, preprocessing, reference cohort, calibration,
    metrics and model card."""
    embeddings, ids = reference
    write_bundle(
        out,
        spec=data.spec,
        data_fingerprint=data.data_fingerprint,
        config={
            "encoders": data.settings,
            "fusion": model.core.config.to_dict(),
            "ensemble": config.ensemble,
            "train": config.to_dict(),
            **({"trees": model.trees.shape.to_dict()} if model.trees is not None else {}),
        },
        weights=model.state_dict(),
        preprocessing=data.prepared.preprocessing,
        reference=embeddings,
        reference_ids=ids,
        calibration=calibration,
        metrics=metrics,
        model_card=render_model_card(data.spec, data.prepared, metrics, calibration, config),
    )
