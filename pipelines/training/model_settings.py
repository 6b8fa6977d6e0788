"""From training settings to the model's ``config.json``: the encoders' and the fusion core's
settings of a cohort, which :func:`pipelines.bundles.model_builder.build_model` builds from."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from data_schemas import CohortSpec
from deepwe_mm import DeepWeConfig
from encoders.base import ModalityEncoder
from pipelines.training.train_config import TrainConfig

SENSOR_TOKENS_TARGET = 48


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
                fields["trajectory"] = bool(stats.get("trajectory", False))
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
                "variables": {
                    "out_dim",
                    "bins",
                    "tokens",
                    "trajectory",
                    "trajectory_heads",
                    "max_observations",
                },
                "windows": {"out_dim", "hidden", "strides", "tokens"},
            }
            overrides = {k: v for k, v in overrides.items() if k in allowed[fields["tokens"]]}
        settings[name] = {"encoder": modality.kind, "config": fields | overrides}
    return settings


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
