"""After training: the reference cohort of the patient graph, calibration on the validation split
(temperature, a positive-logit shift, a decision threshold), and the metrics of metrics.json, each
ensemble member's included.

The calibration and the test metrics use the fixed reference cohort, exactly as prediction will.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pipelines.bundles.model_builder import MultimodalModel
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import PreparedCohort
from pipelines.evaluation.metrics import bootstrap_ci, choose_threshold, rank_auroc
from pipelines.training.member_fit import MemberFit
from pipelines.training.scoring import (
    FeatureWeightMeans,
    collect_logits,
    fit_calibration,
    score,
    shifted,
    split_loader,
)
from pipelines.training.train_config import TrainConfig

Logits = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def reference_cohort(
    model: MultimodalModel,
    prepared: PreparedCohort,
    collate: PatientCollator,
    config: TrainConfig,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fused embeddings of the training patients, with pseudonymous ids (``R00001``...) and outcomes;
    set as the model's reference cohort."""
    model.eval()
    loader = split_loader(prepared.dataset("train"), collate, config, device, shuffle=False)
    embeddings, labels = [], []
    for batch in loader:
        batch = batch.to(device)
        embeddings.append(model.embed(batch).float().cpu())
        labels.append(batch.labels.cpu())
    reference = {"embeddings": torch.cat(embeddings), "labels": torch.cat(labels)}
    ids = [f"R{i + 1:05d}" for i in range(reference["embeddings"].shape[0])]
    model.core.set_reference(reference["embeddings"].to(device), ids, reference["labels"].to(device))
    return reference, ids


# A modality whose mean feature weight on the validation split is below this is one the model has
# stopped reading.
SHUT_GATES = 0.01
# A modality whose mean feature weight on the validation split is above this kept every feature for
# every patient: its weights then rank nothing.
OPEN_GATES = 0.99
# Resamples of the test split for its AUROC interval.
TEST_BOOTSTRAPS = 1000


def calibrate_and_test(
    model: MultimodalModel,
    prepared: PreparedCohort,
    collate: PatientCollator,
    config: TrainConfig,
    device: torch.device,
    fits: list[MemberFit],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibrate ``model`` on the validation split (a positive-logit shift is folded into its output
    layer) and score it: returns (metrics.json, calibration.json)."""

    def logits_of(net: MultimodalModel, split: str, weight_means: FeatureWeightMeans | None = None) -> Logits:
        return collect_logits(
            net,
            split_loader(prepared.dataset(split), collate, config, device, shuffle=False),
            device,
            weight_means,
        )

    binary = len(prepared.classes) == 2
    has_test = bool((prepared.splits == "test").any())
    members = _member_metrics(fits, logits_of, config, binary=binary, has_test=has_test)
    weight_means = FeatureWeightMeans()
    val_logits, val_labels = logits_of(model, "val", weight_means)
    uncalibrated = score(val_logits, val_labels)
    temperature, shift = fit_calibration(val_logits, val_labels, binary)
    if shift:
        model.core.shift_positive_logit(shift)
        val_logits = shifted(val_logits, shift)
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
        # A gate shut early, before its modality taught the model anything, never reopens: the
        # model then ignores that modality, which the summary and the model card must say.
        "shut_modalities": weight_means.below(SHUT_GATES),
        # Gates that never close leave weights of about 1 everywhere: readers of the weights must
        # be told that they do not rank the features.
        "open_modalities": weight_means.above(OPEN_GATES),
    }
    if fits[0].selection is not None:
        metrics["selection"] = fits[0].selection.to_dict()
    if binary:
        calibration["threshold"] = _decision_threshold(val_logits, val_labels, temperature, config)
    if members:
        metrics["members"] = members
    if has_test:
        test_logits, test_labels = logits_of(model, "test")
        metrics["test"] = score(test_logits, test_labels, temperature)
        if binary:
            metrics["test"]["auroc_ci95"] = auroc_interval(test_logits, test_labels, temperature)
    return metrics, calibration


def auroc_interval(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> list[float | None]:
    """The 95% percentile bootstrap interval of AUROC over patients, ``[low, high]`` (None where
    undefined): on a small test split the point estimate alone says little."""
    risk = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
    _, low, high = bootstrap_ci(labels.numpy(), risk, rank_auroc, n_boot=TEST_BOOTSTRAPS, seed=0)
    return [None if math.isnan(low) else low, None if math.isnan(high) else high]


def _member_metrics(
    fits: list[MemberFit], logits_of, config: TrainConfig, *, binary: bool, has_test: bool
) -> list[dict[str, Any]]:
    """Each member of an ensemble scored alone, calibrated as a one-model bundle would be (none for
    a single model)."""
    members = []
    if len(fits) > 1:
        for i, fit in enumerate(fits):
            member_val = logits_of(fit.model, "val")
            temperature, shift = fit_calibration(*member_val, binary)
            scored = {
                "seed": config.seed + i,
                "best_epoch": fit.loop.best_epoch + 1,
                "epochs_run": fit.loop.epoch,
            }
            scored["epoch_seconds_total"] = round(sum(fit.epoch_seconds), 1)
            scored |= {
                "history": fit.loop.history,
                **({"selection": fit.selection.to_dict()} if fit.selection is not None else {}),
                "val": score(shifted(member_val[0], shift), member_val[1], temperature),
            }
            if has_test:
                member_test = logits_of(fit.model, "test")
                scored["test"] = score(shifted(member_test[0], shift), member_test[1], temperature)
            members.append(scored)
    return members


def _decision_threshold(
    val_logits: torch.Tensor, val_labels: torch.Tensor, temperature: float, config: TrainConfig
) -> dict[str, Any]:
    """The decision threshold chosen on the calibrated validation risks, and how (calibration.json)."""
    risk = torch.softmax(val_logits / temperature, dim=1)[:, 1].numpy()
    threshold = choose_threshold(val_labels.numpy(), risk, target_sensitivity=config.target_sensitivity)
    return {
        "value": threshold.value,
        "rule": threshold.rule,
        "val_sensitivity": threshold.sensitivity,
        "val_specificity": threshold.specificity,
    }
