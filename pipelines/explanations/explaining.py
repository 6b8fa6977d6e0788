"""Per-patient explanations: attributions per modality and per token, Shapley contributions, weights.

:func:`explain_patient` is what ``deepwe explain``, the report and the dashboard call. It reads the
patient's row exactly as batch prediction does, then, with the model in eval mode and float32:

- attributes, per present modality, the score (the calibrated log-odds of the positive class for a
  binary outcome; the predicted class's scaled logit otherwise) to that modality's input with the
  other modalities held at the patient's values (:data:`ATTRIBUTED`: which tensor, which baseline);
- sums the attribution of every input element into the encoder token it feeds (a lab value, a word
  piece, an image region, a time window), so that attributions sit next to the model's own feature
  weights, and measures their rank agreement;
- computes exact Shapley values of the calibrated risk over the present modalities (absent ones get
  exactly 0); the empty coalition's value is the base rate of the reference cohort, because the model
  refuses to predict from nothing;
- optionally, faithfulness: deletion/insertion curves over the tokens against random orders.

``method="gradient_x_input"`` replaces Integrated Gradients by gradient x input on the same input,
layer and baseline (the faithfulness benchmark compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data_schemas import PredictionRecord
from deepwe_mm import SELECTED_ABOVE, DeepWeOutput
from encoders.tokens import EncoderBatch
from explain.attribution import (
    GRADIENT_X_INPUT,
    INTEGRATED_GRADIENTS,
    Attribution,
    attribute,
    integrated_gradients,
)
from explain.faithfulness_measures import (
    Curves,
    deletion_insertion,
    infidelity_score,
    rank_agreement,
    sensitivity_score,
)
from explain.shapley import Coalition, exact_shapley
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import Batch, PatientCollator, PatientSample
from pipelines.common.json_values import finite
from pipelines.inference.batching import PredictionDataset, PredictOptions, predict_batch

AUDIO_BASELINE_SCALE = 1e-4
"""Near-silence for the audio baseline: exact zeros would mark every span silent, i.e. unobserved."""

BASELINES = {
    "tabular": "every numeric value at its training mean (0 after standardisation), categories kept",
    "sensor": "every observed cell at its channel's training mean (0 after standardisation), "
    "observation times kept",
    "sensor statistics": "every observed statistic at its training median, what was measured kept",
    "image": "a black image (0 after scaling intensities to [0, 1])",
    "text": "every word piece replaced by [PAD] ([CLS] and [SEP] kept); for deletion curves, a "
    "removed note token is a zero embedding",
    "audio": "near-silence (Gaussian noise at 1e-4 of full scale; exact silence would hide every span)",
}
"""What each modality kind's attribution is measured against (``f(x) - f(baseline)``)."""

METHODS = {
    "tabular": "Integrated Gradients on the standardised numeric values; occlusion (category -> "
    "unknown) for categorical variables",
    "sensor": "Integrated Gradients on the standardised grid (time x channel)",
    "sensor statistics": "Integrated Gradients on the per-channel statistics (first, last, min, max, mean, "
    "count, hours since last, slope)",
    "image": "Integrated Gradients on the pixels at the encoder's input resolution",
    "text": "Integrated Gradients on the word-piece embeddings, through the language model (Layer "
    "Integrated Gradients at its word-embedding layer)",
    "audio": "Layer Integrated Gradients on the mel power spectrogram (frequency x frame)",
}


def method_text(kind: str, method: str = INTEGRATED_GRADIENTS) -> str:
    """How a modality of ``kind`` is attributed by ``method`` (:data:`METHODS` names the IG path)."""
    text = METHODS[kind]
    if method == GRADIENT_X_INPUT:  # the same tensor, layer and baseline; only the method differs
        text = text.replace("Layer Integrated Gradients", "layer gradient x input")
        text = text.replace("Integrated Gradients", "Gradient x input")
    return text


class UnknownPatient(KeyError):
    """The patient id is not in the cohort's table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class ModalityExplanation:
    """One present modality of one patient.

    Attributes:
        kind: the modality kind.
        method: how it was attributed; ``baseline``: against what.
        attribution: the raw attribution (shape of the attributed tensor, no batch dimension):
            tabular (V_num,), sensor (L, C), image (C, H, W) or (C, D, H, W), text (T, H),
            audio (n_mels, F).
        tokens: the encoder's token names (T_m).
        token_attribution: (T_m,) attribution summed into each token.
        feature_weights: (T_m,) the model's weights of those tokens (0 where unobserved).
        agreement: Spearman correlation of |token attribution| and feature weight over the
            observed tokens (NaN with fewer than 3).
        delta: IG completeness error; ``difference``: score(x) - score(baseline) it explains.
        infidelity, sensitivity: Captum's infidelity and max-sensitivity of the IG attribution
            (computed with ``faithfulness=True`` for the kinds attributed at their input: tabular,
            sensor, image; NaN otherwise).
        extras: kind-specific arrays for pictures: ``read`` (what the reader returned: the image at
            its own resolution, the standardised sensor grid, the waveform, the note), ``input``
            (the attributed encoder input), ``observed`` (sensor), ``spectrum`` (audio log-mel),
            ``words`` (text: word pieces with their attributions), ``categorical`` (tabular).
    """

    kind: str
    method: str
    baseline: str
    attribution: Tensor
    tokens: list[str]
    token_attribution: Tensor
    feature_weights: Tensor
    agreement: float
    delta: float
    difference: float
    extras: dict[str, Any] = field(default_factory=dict)
    infidelity: float = math.nan
    sensitivity: float = math.nan

    @property
    def selected(self) -> Tensor:
        """(T_m,) bool: the tokens the model selected for this patient (weight above
        :data:`deepwe_mm.SELECTED_ABOVE`)."""
        return self.feature_weights > SELECTED_ABOVE

    @property
    def relative_delta(self) -> float:
        return abs(self.delta) / abs(self.difference) if abs(self.difference) > 1e-6 else abs(self.delta)


@dataclass
class PatientExplanation:
    """Everything explained about one patient.

    Attributes:
        prediction: the same record batch prediction writes for this row.
        score_name: what the attributions explain.
        score: that score for the patient.
        modalities: present modality -> its explanation (absent modalities have none).
        shapley: modality -> Shapley value on the calibrated risk (0.0 for absent modalities).
        base_value: the empty coalition's risk (reference cohort base rate).
        coalition_values: ``"labs+notes"`` -> risk with only those modalities.
        faithfulness: deletion/insertion curves over all tokens, or None when not asked for.
    """

    prediction: PredictionRecord
    score_name: str
    score: float
    modalities: dict[str, ModalityExplanation]
    shapley: dict[str, float]
    base_value: float
    coalition_values: dict[str, float]
    steps: int
    faithfulness: Curves | None = None

    def to_dict(self, *, include_note_tokens: bool = True) -> dict[str, Any]:
        """JSON-able summary (token-level, without the raw attribution tensors).

        Args:
            include_note_tokens: keep the tokens and word pieces of notes (note text); leave them
                out for anything that is not the patient's own explanation.
        """
        return {
            "patient_id": self.prediction.patient_id,
            "row": self.prediction.row,
            "risk": self.prediction.risk,
            "label": self.prediction.label,
            "probabilities": self.prediction.probabilities,
            "score": {"name": self.score_name, "value": self.score},
            "integrated_gradients_steps": self.steps,
            "shapley": {
                "target": "calibrated risk",
                "base_value": self.base_value,
                "values": self.shapley,
                "sum": sum(self.shapley.values()),
                "coalitions": self.coalition_values,
            },
            "modality_weights": self.prediction.modality_weights,
            "neighbours": [n.model_dump() for n in self.prediction.neighbours],
            "modality_errors": self.prediction.modality_errors,
            "out_of_distribution": {
                "flag": self.prediction.ood,
                "score": self.prediction.ood_score,
                "out_of_range": self.prediction.out_of_range,
            },
            "modalities": {
                name: {
                    "kind": item.kind,
                    "method": item.method,
                    "baseline": item.baseline,
                    "completeness_error": item.delta,
                    "relative_completeness_error": item.relative_delta,
                    "explained_difference": item.difference,
                    "weight_attribution_agreement": finite(item.agreement),
                    "infidelity": finite(item.infidelity),
                    "max_sensitivity": finite(item.sensitivity),
                    "tokens": [
                        {"token": token, "attribution": float(a), "feature_weight": float(w)}
                        for token, a, w in zip(
                            item.tokens,
                            item.token_attribution.tolist(),
                            item.feature_weights.tolist(),
                            strict=True,
                        )
                    ]
                    if include_note_tokens or item.kind != "text"
                    else [],
                    **(
                        {"words": [[w, a] for w, a in item.extras.get("words", [])]}
                        if item.kind == "text" and include_note_tokens
                        else {}
                    ),
                }
                for name, item in self.modalities.items()
            },
            "faithfulness": None if self.faithfulness is None else _curves_dict(self.faithfulness),
        }


def _curves_dict(curves: Curves) -> dict[str, Any]:
    return {
        "fractions": curves.fractions.tolist(),
        "deletion": curves.deletion.tolist(),
        "insertion": curves.insertion.tolist(),
        "random_deletion": curves.random_deletion.tolist(),
        "random_insertion": curves.random_insertion.tolist(),
        "auc": curves.aucs,
    }


# --- reading one patient ------------------------------------------------------------------------


def patient_position(cohort: Cohort, patient_id: str) -> int:
    """The 0-based table position of ``patient_id``.

    Raises:
        UnknownPatient: no row has that id (the message does not list other ids).
    """
    ids = cohort.table[cohort.spec.id].astype(str).str.strip()
    hits = np.flatnonzero(ids.to_numpy() == str(patient_id).strip())
    if hits.size == 0:
        raise UnknownPatient(f"no patient with id {patient_id!r} in {cohort.table_path.name}")
    return int(hits[0])


def read_patient(
    bundle: Bundle, cohort: Cohort, position: int
) -> tuple[PatientSample, Batch, PredictionRecord]:
    """The patient's sample (what the readers returned), its one-row batch on the bundle's device
    and its prediction record."""
    records = list(cohort.records([position]))
    table = cohort.table.iloc[[position]].reset_index(drop=True)
    dataset = PredictionDataset(bundle, cohort, records, table)
    sample, digest, outside = dataset[0]
    collate = PatientCollator(bundle.model.encoders)
    prediction = predict_batch(
        bundle, collate, [sample], [digest], [outside], PredictOptions(), bundle.embedding_distance
    )[0]
    return sample, collate([sample]).to(bundle.device), prediction


# --- scores and batch surgery -------------------------------------------------------------------


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


# --- what is attributed per kind ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The tensor of one modality that is attributed, its baseline and its element -> token maps.

    Attributes:
        key: the encoder input tensor (``batch.inputs[m].tensors[key]``).
        baseline: (1, ...) like that tensor.
        input_tokens: long, that tensor's shape without the batch: the token each element feeds.
            Masking a token sets its elements to the baseline.
        attribution_tokens: the same for the attribution's shape (differs for layer attributions).
        layer: attribute at this module's output instead of at the input.
    """

    key: str
    baseline: Tensor
    input_tokens: Tensor
    attribution_tokens: Tensor
    layer: torch.nn.Module | None = None


def _spans(length: int, count: int, width: int) -> Tensor:
    """(length,) the token of each position when token i covers ``[i * width, (i + 1) * width)``."""
    return (torch.arange(length) // max(1, width)).clamp(max=count - 1)


def target_for(bundle: Bundle, name: str, item: EncoderBatch, n_tokens: int) -> Target:
    """The :class:`Target` of modality ``name`` for its one-patient encoder batch."""
    encoder = bundle.model.encoders[name]
    kind = encoder.kind
    tensors = item.tensors
    if kind == "tabular":
        numeric = tensors["numeric"]
        tokens = torch.arange(numeric.shape[1])
        return Target("numeric", torch.zeros_like(numeric), tokens, tokens)
    if kind == "sensor" and "statistics" in tensors:
        statistics, observed = tensors["statistics"], tensors["observed"]
        edges = encoder.statistics.edges
        median = edges[:, edges.shape[1] // 2].reshape(statistics.shape[1:]).to(statistics)
        baseline = torch.where(observed, median, statistics)
        tokens = torch.arange(statistics[0].numel()).view(statistics.shape[1:])
        return Target("statistics", baseline, tokens, tokens)
    if kind == "sensor":
        values = tensors["values"]
        length, channels = values.shape[1:]
        tokens = _spans(length, n_tokens, encoder.config.window)[:, None].expand(length, channels)
        return Target("values", torch.zeros_like(values), tokens, tokens)
    if kind == "image":
        image = tensors["image"]
        spatial = image.shape[2:]
        grid = encoder.grid
        axes = [
            _spans(size, cells, math.ceil(size / cells)) for size, cells in zip(spatial, grid, strict=True)
        ]
        region = torch.zeros(spatial, dtype=torch.long)
        for axis, index in enumerate(axes):
            shape = [1] * len(spatial)
            shape[axis] = -1
            stride = math.prod(grid[axis + 1 :])
            region = region + index.view(shape) * stride
        tokens = region.expand(image.shape[1:])
        return Target("image", torch.zeros_like(image), tokens, tokens)
    if kind == "text":
        if "embeddings" not in tensors:
            raise ValueError(f"modality {name!r}: explanations need the frozen text encoder")
        embeddings = tensors["embeddings"]
        tokens = torch.arange(embeddings.shape[1])[:, None].expand(embeddings.shape[1:])
        return Target("embeddings", torch.zeros_like(embeddings), tokens, tokens)
    if kind == "audio":
        wave = tensors["waveform"]
        generator = torch.Generator().manual_seed(0)
        baseline = (torch.randn(wave.shape, generator=generator) * AUDIO_BASELINE_SCALE).to(wave.device)
        config = encoder.config
        with torch.no_grad():
            frames = encoder.mel(wave).shape[-1]
        frame_tokens = (torch.arange(frames) * config.hop_length // config.token_span).clamp(max=n_tokens - 1)
        return Target(
            "waveform",
            baseline,
            _spans(wave.shape[1], n_tokens, config.token_span),
            frame_tokens[None, :].expand(config.n_mels, frames),
            layer=encoder.mel,
        )
    raise ValueError(f"modality {name!r}: no attribution method for kind {kind!r}")


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


# --- the explanation ------------------------------------------------------------------------------


def explain_patient(
    bundle: Bundle,
    cohort: Cohort,
    patient_id: str,
    *,
    steps: int = 32,
    faithfulness: bool = False,
    faithfulness_steps: int = 10,
    method: str = INTEGRATED_GRADIENTS,
) -> PatientExplanation:
    """Attributions, Shapley values and weights for one patient (see the module docstring).

    Args:
        method: ``"integrated_gradients"`` or ``"gradient_x_input"`` (``steps`` is then unused).

    Raises:
        UnknownPatient: the id is not in the cohort.
        ValueError: the patient's row has no usable modality (the reason is the prediction's error).
    """
    position = patient_position(cohort, patient_id)
    sample, batch, prediction = read_patient(bundle, cohort, position)
    if prediction.status != "ok":
        raise ValueError(f"patient {patient_id!r} cannot be explained: {prediction.error}")
    model = bundle.model
    model.eval()
    target = positive_index(bundle, prediction)

    score = PatientScorer(bundle, batch, target)

    with torch.no_grad():
        output = model(batch)
    explained, targets = explain_modalities(bundle, sample, batch, score, output, steps=steps, method=method)
    present = list(explained)
    shapley, base, values = modality_shapley(score, present)
    curves = None
    if faithfulness:
        curves = token_curves(batch, explained, targets, score, steps=faithfulness_steps)
        for name, item in explained.items():
            if targets[name].layer is None and item.kind != "text":
                item.infidelity, item.sensitivity = robustness(score, batch, name, targets[name], item, steps)
    with torch.no_grad():
        patient_score = float(score({})[0])
    return PatientExplanation(
        prediction=prediction,
        score_name="calibrated log-odds of " + repr(bundle.classes[target])
        if len(bundle.classes) == 2
        else f"temperature-scaled logit of {bundle.classes[target]!r}",
        score=patient_score,
        modalities=explained,
        shapley={m: shapley.get(m, 0.0) for m in output.modalities},
        base_value=base,
        coalition_values={"+".join(sorted(c)) or "(none)": v for c, v in values.items()},
        steps=steps,
        faithfulness=curves,
    )


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
        delta=attribution.delta,
        difference=attribution.difference,
        extras=extras,
    )


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


def modality_shapley(
    score: PatientScorer, present: list[str]
) -> tuple[dict[str, float], float, dict[Coalition, float]]:
    """Exact Shapley values of the calibrated risk of the scorer's class over the ``present`` modalities.

    Returns:
        (modality -> value, the empty coalition's value, coalition -> risk).
    """
    bundle = score.bundle
    base = reference_base_rate(bundle, score.target)
    device = score.batch.labels.device

    def value(subsets: list[Coalition]) -> list[float]:
        filled = [s for s in subsets if s]
        keep = {m: torch.tensor([m in s for s in filled], device=device) for m in present}
        with torch.no_grad():
            logits = score.logits({}, len(filled), present=keep).float() / bundle.temperature
            risks = iter(torch.softmax(logits, dim=1)[:, score.target].tolist())
        return [next(risks) if s else base for s in subsets]

    shapley, values = exact_shapley(present, value)
    return shapley, base, values


def reference_base_rate(bundle: Bundle, target: int) -> float:
    """Share of the reference cohort in class ``target`` (1 / C without stored labels)."""
    labels = bundle.contents.reference.get("labels")
    if labels is None or labels.numel() == 0:
        return 1.0 / len(bundle.classes)
    return float((labels == target).float().mean())


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
