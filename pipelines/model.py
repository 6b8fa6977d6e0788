"""The multimodal model: one encoder per modality feeding the DeepWe fusion core.

``pipelines`` is the only place that knows both the encoders and the fusion core; the core sees
tokens and present flags, never encoder classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from data_schemas import CohortSpec
from deepwe_mm import DeepWe, DeepWeConfig, DeepWeOutput
from encoders._registry import create_encoder
from encoders.base import ModalityEncoder
from pipelines.dataset import Batch
from pipelines.train_config import TrainConfig

SENSOR_TOKENS_TARGET = 48


class MultimodalModel(nn.Module):
    """Encoders (``nn.ModuleDict`` by modality) + :class:`DeepWe`.

    Args:
        encoders: modality name -> encoder, in the spec's order.
        core: the fusion core, configured for the same modalities and token widths.
    """

    def __init__(self, encoders: Mapping[str, ModalityEncoder], core: DeepWe) -> None:
        super().__init__()
        if tuple(encoders) != core.config.modalities:
            raise ValueError(
                f"encoders {list(encoders)} do not match the core's {list(core.config.modalities)}"
            )
        self.encoders = nn.ModuleDict(encoders)
        self.core = core

    def tokens(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Token values (B, T_m, D), masks (B, T_m) and present flags (B,) per modality."""
        values, masks = {}, {}
        for name, encoder in self.encoders.items():
            tokens = encoder(batch.inputs[name])
            values[name], masks[name] = tokens.values, tokens.mask
        return values, masks, batch.present()

    def forward(self, batch: Batch) -> DeepWeOutput:
        return self.core(*self.tokens(batch))

    def embed(self, batch: Batch) -> Tensor:
        """(B, H) fused embeddings before the patient graph (rows of the reference cohort)."""
        return self.core.embed(*self.tokens(batch))


def sensor_strides(cells: int, target_tokens: int = SENSOR_TOKENS_TARGET) -> tuple[int, ...]:
    """Temporal CNN strides so that a grid of ``cells`` becomes about ``target_tokens`` tokens."""
    factor = max(1, math.ceil(cells / target_tokens))
    strides = []
    while factor > 1:
        step = min(5, factor)
        strides.append(step)
        factor = math.ceil(factor / step)
    return tuple(strides) or (1,)


def encoder_settings(
    spec: CohortSpec, preprocessing: Mapping[str, Any], config: TrainConfig
) -> dict[str, dict[str, Any]]:
    """Per modality, the registered encoder name and its config fields (JSON-able, for config.json)."""
    settings: dict[str, dict[str, Any]] = {}
    for name, modality in spec.modalities.items():
        fields: dict[str, Any] = {"out_dim": config.token_dim}
        if modality.kind == "tabular":
            tabular = preprocessing["tabular"][name]
            fields |= {
                "numeric": list(modality.numeric),
                "categorical": list(modality.categorical),
                "categories": [len(c["vocabulary"]) for c in tabular["categorical"]],
            }
        elif modality.kind == "audio":
            fields |= {"sample_rate": modality.sample_rate}
            if modality.duration_s is not None:
                fields["duration_s"] = modality.duration_s
        elif modality.kind == "sensor":
            cells = preprocessing["sensor"][name]["cells"]
            fields |= {"channels": len(modality.channels), "strides": list(sensor_strides(cells))}
        elif modality.kind == "text":
            fields |= {"cache_dir": preprocessing.get("text_cache")}
        fields |= config.encoders.get(modality.kind, {})
        settings[name] = {"encoder": modality.kind, "config": fields}
    return settings


def build_model(encoders: Mapping[str, Mapping[str, Any]], fusion: Mapping[str, Any]) -> MultimodalModel:
    """Rebuild a model from the ``encoders`` settings and the fusion config dict of ``config.json``."""
    built = {name: create_encoder(s["encoder"], **s["config"]) for name, s in encoders.items()}
    core = DeepWe(DeepWeConfig.from_dict(fusion))
    return MultimodalModel(built, core)


def fusion_settings(
    encoders: Mapping[str, ModalityEncoder], n_classes: int, class_weights: list[float], config: TrainConfig
) -> dict[str, Any]:
    dims = {name: encoder.out_dim for name, encoder in encoders.items()}
    base = {"modality_dims": dims, "n_classes": n_classes, "class_weights": class_weights}
    return DeepWeConfig.from_dict(base | config.fusion).to_dict()


def text_model_identity(model: MultimodalModel) -> dict[str, dict[str, str]]:
    """Per text modality, the language model folder and the sha256 of its weights (preprocessing.json)."""
    return {
        name: {"model_dir": encoder.model_dir, "weights_sha256": encoder.weights_sha256()}
        for name, encoder in model.encoders.items()
        if encoder.kind == "text"
    }
