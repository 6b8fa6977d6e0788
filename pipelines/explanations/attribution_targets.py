"""What is attributed for each modality kind: the encoder input tensor (or layer), its baseline, and
which token each of its elements feeds; how each kind's method and baseline are described."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from encoders.tokens import EncoderBatch
from explain.attribution import GRADIENT_X_INPUT, INTEGRATED_GRADIENTS
from pipelines.bundles.loading import Bundle

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
