"""The patient as a function that attribution methods can call: the score being explained, and
one patient's encoder batches copied and changed without re-running what did not change."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from data_schemas import PredictionRecord
from encoders.tokens import EncoderBatch
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.dataset import Batch


def positive_index(bundle: Bundle, prediction: PredictionRecord) -> int:
    """The class the explanation targets: the positive class (binary) or the predicted one."""
    classes = bundle.classes
    return 1 if len(classes) == 2 else classes.index(prediction.label)


def score_of(bundle: Bundle, logits: Tensor, target: int) -> Tensor:
    """(B,) calibrated log-odds of ``target`` (binary) or its temperature-scaled logit."""
    scaled = logits.float() / bundle.temperature
    if scaled.shape[1] == 2:
        return scaled[:, target] - scaled[:, 1 - target]
    return scaled[:, target]


def copies(item: EncoderBatch, k: int, **replaced: Tensor) -> EncoderBatch:
    """``k`` copies of one patient's encoder batch, with some of its tensors replaced by (k, ...) ones."""
    tensors = {key: value.expand(k, *value.shape[1:]) for key, value in item.tensors.items()}
    return EncoderBatch(tensors=tensors | replaced, present=item.present.expand(k), names=item.names * k)


class PatientScorer:
    """Scores of one patient under changed inputs, re-encoding only the modalities that change.

    The tokens of every modality are computed once; a call re-runs the encoders of the modalities in
    ``changed`` (each a K-row encoder batch) and the fusion core on K rows.

    Args:
        bundle: the loaded model (eval mode).
        batch: the patient's one-row batch.
        target: the class whose score is explained (see :func:`score_of`).
    """

    def __init__(self, bundle: Bundle, batch: Batch, target: int) -> None:
        self.bundle, self.batch, self.target = bundle, batch, target
        trees = bundle.model.trees
        self.trees = trees if trees is not None and bool(trees.weight) else None
        with torch.no_grad():
            self.values, self.masks, self.present = bundle.model.tokens(batch)
            self.tree_blocks_of_patient = bundle.model.scalar_feature_blocks(batch) if self.trees else {}

    def logits(
        self, changed: Mapping[str, EncoderBatch], k: int = 1, present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """(K, C) logits with ``changed`` modalities re-encoded and, optionally, other present flags."""
        values = {m: v.expand(k, *v.shape[1:]) for m, v in self.values.items()}
        masks = {m: v.expand(k, *v.shape[1:]) for m, v in self.masks.items()}
        flags = {m: v.expand(k) for m, v in self.present.items()}
        for name, item in changed.items():
            tokens = self.bundle.model.encoders[name](item)
            values[name], masks[name] = tokens.values, tokens.mask
        if present is not None:
            flags = {m: flags[m] & present[m] if m in present else flags[m] for m in flags}
        logits = self.bundle.model.core(values, masks, flags).logits
        evidence = (
            self.bundle.model.tree_evidence(self.tree_blocks(changed, k), flags) if self.trees else None
        )
        return logits if evidence is None else logits + evidence.to(logits.dtype)

    def tree_blocks(self, changed: Mapping[str, EncoderBatch], k: int = 1) -> dict[str, Tensor]:
        """Modality -> (K, P_m) the scalar features the trees read: from the changed modalities'
        batches, the patient's own values elsewhere."""
        model = self.bundle.model
        return {
            name: model.scalar_features_of(name, changed[name]) if name in changed else block.expand(k, -1)
            for name, block in self.tree_blocks_of_patient.items()
        }

    def tree_score(self) -> float | None:
        """The trees' part of the patient's score (their weighted log-odds in score units), or None
        without trees."""
        evidence = self.bundle.model.tree_evidence(self.tree_blocks({})) if self.trees else None
        return None if evidence is None else float(score_of(self.bundle, evidence, self.target)[0])

    def tree_attribution(self, name: str, baseline: EncoderBatch) -> Tensor | None:
        """(P_name,) float32 how the trees' evidence about modality ``name``'s scalar features moves
        the score from ``baseline`` (a one-row encoder batch) to the patient, feature by feature:
        the change of each feature's path contributions (:meth:`TreeEvidence.contributions`), in
        score units. A changed path can also move what the trees credit to other modalities'
        features, so these sum to the trees' whole change only when it does not; None without trees."""
        if self.trees is None:
            return None
        moves = []
        for changed in ({}, {name: baseline}):
            blocks = self.tree_blocks(changed)
            start = sum(block.shape[1] for block in list(blocks.values())[: list(blocks).index(name)])
            _, per_feature = self.trees.contributions(torch.cat(list(blocks.values()), dim=1))
            moves.append(per_feature[0, start : start + blocks[name].shape[1]])
        return score_of(self.bundle, (moves[0] - moves[1]) * self.trees.weight, self.target)

    def __call__(self, changed: Mapping[str, EncoderBatch]) -> Tensor:
        """(K,) scores, K the rows of the changed encoder batches (1 when nothing changes)."""
        k = len(next(iter(changed.values()))) if changed else 1
        return score_of(self.bundle, self.logits(changed, k), self.target)

    def changed(self, name: str, key: str, value: Tensor) -> Tensor:
        """(K,) scores with ``inputs[name].tensors[key] = value`` ((K, ...) rows)."""
        return self({name: copies(self.batch.inputs[name], value.shape[0], **{key: value})})
