"""The multimodal model: one encoder per modality feeding the DeepWe fusion core.

``pipelines`` is the only place that knows both the encoders and the fusion core; the core sees
tokens and present flags, never encoder classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from data_schemas import CohortSpec
from deepwe_mm import DeepWe, DeepWeConfig, DeepWeEnsemble, DeepWeOutput
from encoders import create_encoder
from encoders.base import ModalityEncoder
from encoders.tokens import Tokens
from pipelines.cohorts.dataset import Batch
from pipelines.training.train_config import TrainConfig

SENSOR_TOKENS_TARGET = 48


class MultimodalModel(nn.Module):
    """Encoders (``nn.ModuleDict`` by modality) + :class:`DeepWe`.

    Args:
        encoders: modality name -> encoder, in the spec's order.
        core: the fusion core, configured for the same modalities and token widths.
    """

    def __init__(self, encoders: Mapping[str, ModalityEncoder], core: DeepWe | DeepWeEnsemble) -> None:
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
        if self.training:  # the patient graph may read other training patients' outcomes
            return self.core(*self.tokens(batch), labels=batch.labels, ids=batch.indices)
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
                "numeric": [c["name"] for c in tabular["numeric"]],
                "categorical": [c["name"] for c in tabular["categorical"]],
                "categories": [len(c["vocabulary"]) for c in tabular["categorical"]],
                "bins": config.bins,
            }
        elif modality.kind == "audio":
            fields |= {"sample_rate": modality.sample_rate}
            if modality.duration_s is not None:
                fields["duration_s"] = modality.duration_s
        elif modality.kind == "sensor":
            stats = preprocessing["sensor"][name]
            fields |= {"channels": len(modality.channels), "tokens": stats.get("tokens", "windows")}
            if fields["tokens"] == "variables":
                fields |= {"names": list(modality.channels), "bins": config.bins}
            else:
                fields |= {"strides": list(sensor_strides(stats["cells"]))}
        elif modality.kind == "text":
            fields |= {"cache_dir": preprocessing.get("text_cache")}
        overrides = dict(config.encoders.get(modality.kind, {}))
        if modality.kind == "sensor" and overrides.get("tokens", fields["tokens"]) != fields["tokens"]:
            raise ValueError(
                f"sensor modality {name!r}: prepared for {fields['tokens']} tokens, config says {overrides['tokens']}"
            )
        if modality.kind == "sensor":
            # Settings of the other token mode (a CNN's hidden width) do not apply to this one.
            allowed = {
                "variables": {"out_dim", "bins", "tokens"},
                "windows": {"out_dim", "hidden", "strides", "tokens"},
            }
            overrides = {k: v for k, v in overrides.items() if k in allowed[fields["tokens"]]}
        settings[name] = {"encoder": modality.kind, "config": fields | overrides}
    return settings


def set_numeric_edges(model: MultimodalModel, preprocessing: Mapping[str, Any]) -> None:
    """Give each encoder's numerical embedding the quantile bin edges fitted on the training split
    (they then travel with the weights)."""
    for name, edges in preprocessing.get("numeric_edges", {}).items():
        encoder = model.encoders[name]
        embedding = getattr(encoder, "numeric_embedding", None) or getattr(encoder, "statistics", None)
        if embedding is not None:
            embedding.set_edges(np.asarray(edges, dtype=np.float32))


def build_model(
    encoders: Mapping[str, Mapping[str, Any]], fusion: Mapping[str, Any], ensemble: int = 1
) -> MultimodalModel:
    """Rebuild a model from the ``encoders`` settings and the fusion config dict of ``config.json``,
    with ``ensemble`` members when it is more than 1."""

    def member() -> MultimodalModel:
        built = {name: create_encoder(s["encoder"], **s["config"]) for name, s in encoders.items()}
        return MultimodalModel(built, DeepWe(DeepWeConfig.from_dict(fusion)))

    if ensemble < 1:
        raise ValueError(f"ensemble must be >= 1, got {ensemble}")
    return member() if ensemble == 1 else ensemble_model([member() for _ in range(ensemble)])


class EnsembleEncoder(ModalityEncoder):
    """The encoders of one modality across ensemble members, side by side.

    Every member collates the same way, so the first one collates; ``forward`` concatenates the
    members' token values along the width (B, T, k · D), which :class:`deepwe_mm.DeepWeEnsemble`
    splits again. Attributes it does not have (``config``, ``statistics``, ``mel``...) are the first
    member's, so explanations find the inputs they attribute to.
    """

    def __init__(self, members: list[ModalityEncoder]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.kind = members[0].kind
        self.config = members[0].config
        self.out_dim = members[0].out_dim * len(members)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["members"][0], name)

    def collate(self, samples):
        return self.members[0].collate(samples)

    def forward(self, batch):
        tokens = [member(batch) for member in self.members]
        values = torch.cat([t.values for t in tokens], dim=-1)
        return Tokens(values=values, mask=tokens[0].mask, names=tokens[0].names)


def ensemble_model(members: list[MultimodalModel]) -> MultimodalModel:
    """One model whose logits are the mean of ``members``' (same settings, different seeds)."""
    names = list(members[0].encoders)
    encoders = {name: EnsembleEncoder([m.encoders[name] for m in members]) for name in names}
    return MultimodalModel(encoders, DeepWeEnsemble([m.core for m in members]))


def fusion_settings(
    encoders: Mapping[str, ModalityEncoder],
    n_classes: int,
    class_weights: list[float] | None,
    config: TrainConfig,
) -> dict[str, Any]:
    """The fusion core's config: token widths, groups and fixed token counts from the encoders,
    then the overrides."""
    dims = {name: encoder.out_dim for name, encoder in encoders.items()}
    groups = {
        name: list(encoder.token_groups)
        for name, encoder in encoders.items()
        if getattr(encoder, "token_groups", None) is not None
    }
    counts = {
        name: len(encoder.token_names)
        for name, encoder in encoders.items()
        if getattr(encoder, "fixed_token_count", False)
    }
    base = {
        "modality_dims": dims,
        "n_classes": n_classes,
        "class_weights": class_weights,
        "token_groups": groups,
        "token_counts": counts,
    }
    return DeepWeConfig.from_dict(base | config.fusion).to_dict()


def text_model_identity(model: MultimodalModel) -> dict[str, dict[str, str]]:
    """Per text modality, the language model folder and the sha256 of its weights (preprocessing.json)."""
    return {
        name: {"model_dir": encoder.model_dir, "weights_sha256": encoder.weights_sha256()}
        for name, encoder in model.encoders.items()
        if encoder.kind == "text"
    }
