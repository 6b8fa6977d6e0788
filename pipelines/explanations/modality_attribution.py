"""Attribution of each present modality of one patient: Integrated Gradients (or gradient x input)
through :class:`~pipelines.explanations.patient_scorer.PatientScorer`, summed into the encoder's
tokens; word pieces of notes, occlusion of categories; Captum's robustness measures; and the
deletion/insertion curves over every token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepwe_mm import DeepWeOutput
from explain.attribution import INTEGRATED_GRADIENTS, Attribution, attribute, integrated_gradients
from explain.faithfulness_measures import (
    Curves,
    deletion_insertion,
    infidelity_score,
    rank_agreement,
    sensitivity_score,
)
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.dataset import Batch, PatientSample
from pipelines.explanations.attribution_targets import BASELINES, Target, method_text, target_for
from pipelines.explanations.patient_explanation import ModalityExplanation
from pipelines.explanations.patient_scorer import PatientScorer, copies


def explain_modalities(
    bundle: Bundle,
    sample: PatientSample,
    batch: Batch,
    score: PatientScorer,
    output: DeepWeOutput,
    *,
    steps: int = 32,
    method: str = INTEGRATED_GRADIENTS,
) -> tuple[dict[str, ModalityExplanation], dict[str, Target]]:
    """The attribution of every present modality of one patient (the model in eval mode).

    Args:
        sample, batch: the patient as :func:`read_patient` returns them.
        score: the patient's scorer; ``output``: the model's output for ``batch``.
        steps: Integrated Gradients steps; method: ``"integrated_gradients"`` or ``"gradient_x_input"``.

    Returns:
        (present modality -> its explanation, present modality -> what was attributed), in the
        model's modality order.
    """
    present = [m for k, m in enumerate(output.modalities) if bool(output.modality_present[0, k])]
    explained: dict[str, ModalityExplanation] = {}
    targets: dict[str, Target] = {}
    for name in present:
        item = batch.inputs[name]
        tokens = list(item.names[0])
        weights = output.feature_weights[name][0].detach().float().cpu()
        targets[name] = target_for(bundle, name, item, len(tokens))
        explained[name] = _explain_modality(
            bundle,
            batch,
            name,
            targets[name],
            score,
            tokens,
            weights,
            output.token_masks[name][0].cpu(),
            steps,
            note=sample.inputs[name],
            method=method,
        )
        explained[name].extras["read"] = sample.inputs[name]
    return explained, targets


def _explain_modality(
    bundle: Bundle,
    batch: Batch,
    name: str,
    target: Target,
    score: PatientScorer,
    tokens: list[str],
    weights: Tensor,
    observed: Tensor,
    steps: int,
    note: str | None = None,
    method: str = INTEGRATED_GRADIENTS,
) -> ModalityExplanation:
    kind = bundle.model.encoders[name].kind
    inputs = batch.inputs[name].tensors[target.key]
    extras: dict[str, Any] = {"input": inputs[0].detach().float().cpu()}
    statistics = target.key == "statistics"
    if kind == "text":
        attribution, per_token, extras["words"] = _word_piece_attribution(
            bundle, batch, name, note, score, len(tokens), steps, method
        )
    else:

        def forward(values: Tensor) -> Tensor:
            return score.changed(name, target.key, values)

        attribution = attribute(
            forward, inputs, target.baseline, method=method, steps=steps, layer=target.layer
        )
        per_token = _token_sums(attribution.values, target.attribution_tokens, len(tokens))
    if kind == "tabular":
        extras["categorical"] = _categorical_occlusion(batch, name, score)
        for offset, value in enumerate(extras["categorical"].tolist()):  # after the numeric tokens
            per_token[len(attribution.values) + offset] = value
        extras["numeric_missing"] = batch.inputs[name].tensors["numeric_missing"][0].cpu()
    elif kind == "sensor":
        extras["observed"] = batch.inputs[name].tensors["observed"][0].cpu()
        extras["statistics"] = statistics
    elif kind == "audio":
        encoder = bundle.model.encoders[name]
        with torch.no_grad():
            extras["spectrum"] = torch.log(encoder.mel(inputs) + 1e-6)[0].cpu()
    delta = attribution.delta
    if kind in ("tabular", "sensor"):
        # Integrated Gradients sees no gradient through the trees: their evidence is split by their
        # path contributions, between the patient and the same baseline, onto the tokens that the
        # attributed tensor feeds (categorical values are occluded, trees included). What the trees
        # credit elsewhere stays in the completeness error.
        baseline = copies(batch.inputs[name], 1, **{target.key: target.baseline})
        trees = score.tree_attribution(name, baseline)
        if trees is not None:
            trees = trees[: int(target.input_tokens.max()) + 1]
            per_token[: len(trees)] += trees
            delta += float(trees.sum())
    attributed = observed.clone()
    if (kind == "tabular" and tokens[-1:] == ["missing pattern"]) or statistics:
        attributed[-1] = False  # a pattern token has no input element of its own: not ranked
    agreement = rank_agreement(per_token.abs()[attributed], weights[attributed])
    return ModalityExplanation(
        kind=kind,
        method=method_text("sensor statistics" if statistics else kind, method),
        baseline=BASELINES["sensor statistics" if statistics else kind],
        attribution=attribution.values,
        tokens=tokens,
        token_attribution=per_token,
        feature_weights=weights,
        agreement=agreement,
        delta=delta,
        difference=attribution.difference,
        extras=extras,
    )


def robustness(
    score: PatientScorer, batch: Batch, name: str, target: Target, item: ModalityExplanation, steps: int
) -> tuple[float, float]:
    """Captum's infidelity (noise 0.1 in the standardised or [0, 1] input units, 16 draws) and
    max-sensitivity (radius 0.02, 4 draws, IG with at most 16 steps) of one modality's attribution."""
    inputs = batch.inputs[name].tensors[target.key].float()

    def forward(values: Tensor) -> Tensor:
        return score.changed(name, target.key, values)

    def explain(values: Tensor) -> Tensor:
        return torch.stack(
            [
                integrated_gradients(forward, values[i : i + 1], target.baseline, steps=min(steps, 16)).values
                for i in range(values.shape[0])
            ]
        ).to(values.device)

    attribution = item.attribution[None].to(inputs.device)
    return infidelity_score(forward, inputs, attribution), sensitivity_score(explain, inputs, samples=4)


def _word_piece_attribution(
    bundle: Bundle,
    batch: Batch,
    name: str,
    note: str | None,
    score: PatientScorer,
    n_tokens: int,
    steps: int,
    method: str = INTEGRATED_GRADIENTS,
) -> tuple[Attribution, Tensor, list[tuple[str, float]]]:
    """Integrated Gradients (or ``method``) on the note's word-piece embeddings, through the language model.

    This is Layer Integrated Gradients at the model's word-embedding layer, written as IG on that
    layer's output: the baseline replaces every word piece by ``[PAD]`` (``[CLS]``/``[SEP]`` kept).

    Returns:
        (the attribution of shape (C, L, H), its sum per encoder token (T,), and the note's word
        pieces in order with their attributions, special and padding positions left out).
    """
    if not isinstance(note, str):
        raise ValueError(f"modality {name!r}: the note text is needed to attribute to its words")
    encoder = bundle.model.encoders[name]
    device = batch.labels.device
    tensors, pieces = encoder.windows(note)
    tensors = {key: value.to(device) for key, value in tensors.items()}
    language_model = encoder.language_model()
    embed = language_model.get_input_embeddings()
    ids, attention = tensors["input_ids"], tensors["attention_mask"].bool()
    lengths = attention[0].sum(-1)  # (C,) [CLS] + word pieces + [SEP]
    positions = torch.arange(ids.shape[-1], device=device)
    words = (positions > 0) & (positions < (lengths - 1)[:, None])  # (C, L): the word pieces
    words = words[None]
    pad = int(language_model.config.pad_token_id or 0)
    with torch.no_grad():
        inputs, baseline = embed(ids), embed(torch.where(words, torch.full_like(ids, pad), ids))

    def forward(values: Tensor) -> Tensor:
        pooled = encoder.pool_windows(values, tensors, n_tokens)
        return score.changed(name, "embeddings", pooled)

    attribution = attribute(forward, inputs, baseline, method=method, steps=steps)
    per_position = attribution.values.sum(-1)  # (C, L)
    per_token = _token_sums(per_position, tensors["targets"][0].cpu(), n_tokens)
    listed = [
        (pieces[c][position], float(per_position[c, position]))
        for c in range(per_position.shape[0])
        for position in range(1, len(pieces[c]) - 1)
    ]
    return attribution, per_token, listed


def _token_sums(values: Tensor, tokens: Tensor, n_tokens: int) -> Tensor:
    """(n_tokens,) sums of ``values`` per token index (elements with index -1 are dropped)."""
    values, tokens = values.flatten().float(), tokens.flatten().to(values.device)
    keep = tokens >= 0
    return torch.zeros(n_tokens, device=values.device).index_add_(0, tokens[keep], values[keep]).cpu()


UNKNOWN_CATEGORY = 1
"""The code of a category the training data did not have (``encoders.readers.tabular_files``)."""


def _categorical_occlusion(batch: Batch, name: str, score: PatientScorer) -> Tensor:
    """(V_cat,) score change when each observed category is replaced by "unknown" (0 if missing)."""
    codes = batch.inputs[name].tensors["categorical"]
    n = codes.shape[1]
    if n == 0:
        return torch.zeros(0)
    variants = codes.expand(n + 1, n).clone()
    for j in range(n):
        if variants[j + 1, j] > UNKNOWN_CATEGORY:
            variants[j + 1, j] = UNKNOWN_CATEGORY
    with torch.no_grad():
        scores = score.changed(name, "categorical", variants).cpu()
    return scores[0] - scores[1:]


def token_curves(
    batch: Batch,
    explained: Mapping[str, ModalityExplanation],
    targets: Mapping[str, Target],
    score: PatientScorer,
    *,
    steps: int = 10,
    random_orders: int = 5,
) -> Curves:
    """Deletion/insertion over every token of every explained modality, ranked by attribution.

    Removing a token sets the input elements it covers to the modality's baseline.
    """
    names = list(explained)
    counts = [len(explained[m].tokens) for m in names]
    offsets = np.cumsum([0, *counts])
    ranking = torch.cat([explained[m].token_attribution for m in names])

    def scorer(keep: Tensor) -> Tensor:
        changed = {}
        for i, name in enumerate(names):
            chosen = targets[name]
            original = batch.inputs[name].tensors[chosen.key]
            local = keep[:, offsets[i] : offsets[i + 1]].to(original.device)
            element_keep = local[:, chosen.input_tokens.to(original.device)]
            masked = torch.where(
                element_keep, original.expand_as(element_keep), chosen.baseline.expand_as(element_keep)
            )
            changed[name] = copies(batch.inputs[name], keep.shape[0], **{chosen.key: masked})
        return score(changed)

    return deletion_insertion(scorer, ranking, steps=steps, random_orders=random_orders)
