"""After training: the reference cohort of the patient graph, calibration on the validation split
(the tree-evidence weight, temperature, a positive-logit shift, a decision threshold), and the
metrics of metrics.json, each ensemble member's included.

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
    calibrated_score,
    collect_logits,
    collect_tree_log_odds,
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
# The weights of the trees' log-odds tried on the validation split, added to the network's logits.
TREE_WEIGHTS = tuple(round(0.1 * step, 1) for step in range(31))
LOSS_TOLERANCE = 1e-6


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
    tree_log_odds: dict[str, torch.Tensor] = {}
    if model.trees is not None:
        model.trees.weight.zero_()  # the network alone until the weight is chosen
        tree_log_odds = {
            split: collect_tree_log_odds(
                model, split_loader(prepared.dataset(split), collate, config, device, shuffle=False), device
            ).float()
            for split in (("val", "test") if has_test else ("val",))
        }
    members = _member_metrics(fits, logits_of, config, tree_log_odds, binary=binary, has_test=has_test)
    trees = _weigh_trees(model, logits_of, tree_log_odds, binary=binary, has_test=has_test)
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
    if trees is not None:  # chosen before the temperature, on the same split; it lives in the weights
        calibration["tree_weight"] = trees["weight"]
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
    if trees is not None:
        metrics["tree_evidence"] = trees
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


def _weigh_trees(
    model: MultimodalModel, logits_of, tree_log_odds: dict[str, torch.Tensor], *, binary: bool, has_test: bool
) -> dict[str, Any] | None:
    """Choose the weight of the model's trees on the validation split (:func:`best_tree_weight`)
    and set it; None for a model without trees.

    Returns what metrics.json records: the weight, the trees' size, the validation log-loss with and
    without them, and the network alone calibrated and scored on its own (validation, test)."""
    if model.trees is None:
        return None
    network_val = logits_of(model, "val")
    weight, losses = best_tree_weight(network_val[0], tree_log_odds["val"], network_val[1])
    network = {"val": calibrated_score(*network_val)}
    if has_test:
        temperature, shift = fit_calibration(*network_val, binary)
        test_logits, test_labels = logits_of(model, "test")
        network["test"] = score(shifted(test_logits, shift), test_labels, temperature)
    model.trees.weight.fill_(weight)
    shape = model.trees.shape
    return {
        "weight": weight,
        "trees": shape.trees,
        "folds": shape.fits,
        "features": shape.features,
        "val_log_loss": losses[TREE_WEIGHTS.index(weight)],
        "val_log_loss_without": losses[0],
        "network_alone": network,
    }


def best_tree_weight(
    network: torch.Tensor, trees: torch.Tensor, labels: torch.Tensor
) -> tuple[float, list[float]]:
    """The weight of :data:`TREE_WEIGHTS` whose ``network + weight * trees`` logits have the lowest
    calibrated log-loss on ``labels`` (the smaller weight on a tie), and the log-loss of each.

    Args:
        network: (N, C) the network's logits; trees: (N, C) the trees' log-odds; labels: (N,).
    """
    trees = trees.to(network.dtype)
    losses = [calibrated_score(network + weight * trees, labels)["log_loss"] for weight in TREE_WEIGHTS]
    # The smallest weight within float noise of the best: trees that add nothing get weight 0.
    best = next(i for i, loss in enumerate(losses) if loss <= min(losses) + LOSS_TOLERANCE)
    return TREE_WEIGHTS[best], losses


def auroc_interval(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> list[float | None]:
    """The 95% percentile bootstrap interval of AUROC over patients, ``[low, high]`` (None where
    undefined): on a small test split the point estimate alone says little."""
    risk = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
    _, low, high = bootstrap_ci(labels.numpy(), risk, rank_auroc, n_boot=TEST_BOOTSTRAPS, seed=0)
    return [None if math.isnan(low) else low, None if math.isnan(high) else high]


def _member_metrics(
    fits: list[MemberFit],
    logits_of,
    config: TrainConfig,
    tree_log_odds: dict[str, torch.Tensor],
    *,
    binary: bool,
    has_test: bool,
) -> list[dict[str, Any]]:
    """Each member of an ensemble scored alone, with the trees weighed and calibrated as a one-model
    bundle would be (none for a single model)."""
    members = []
    if len(fits) > 1:
        for i, fit in enumerate(fits):
            member_val = logits_of(fit.model, "val")
            weight = 0.0
            if tree_log_odds:
                weight, _ = best_tree_weight(member_val[0], tree_log_odds["val"], member_val[1])
                member_val = (member_val[0] + weight * tree_log_odds["val"], member_val[1])
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
                **({"tree_weight": weight} if tree_log_odds else {}),
                "val": score(shifted(member_val[0], shift), member_val[1], temperature),
            }
            if has_test:
                test_logits, test_labels = logits_of(fit.model, "test")
                if tree_log_odds:
                    test_logits = test_logits + weight * tree_log_odds["test"]
                scored["test"] = score(shifted(test_logits, shift), test_labels, temperature)
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
