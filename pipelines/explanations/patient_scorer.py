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
        with torch.no_grad():
            self.values, self.masks, self.present = bundle.model.tokens(batch)

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
        return self.bundle.model.core(values, masks, flags).logits

    def __call__(self, changed: Mapping[str, EncoderBatch]) -> Tensor:
        """(K,) scores, K the rows of the changed encoder batches (1 when nothing changes)."""
        k = len(next(iter(changed.values()))) if changed else 1
        return score_of(self.bundle, self.logits(changed, k), self.target)

    def changed(self, name: str, key: str, value: Tensor) -> Tensor:
        """(K,) scores with ``inputs[name].tensors[key] = value`` ((K, ...) rows)."""
        return self({name: copies(self.batch.inputs[name], value.shape[0], **{key: value})})
