"""Training settings: a frozen dataclass with sane defaults, overridable from a plain YAML file."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENCODER_KINDS = ("tabular", "text", "image", "audio", "sensor")
STOPPING_SCORES = ("calibrated_log_loss", "log_loss", "auroc")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``deepwe train`` needs besides the cohort.

    Attributes:
        epochs: most epochs; early stopping usually ends sooner.
        patience: epochs without a better validation score before stopping.
        early_stopping: the validation score that picks the best epoch: ``"calibrated_log_loss"``
            (the log-loss after the temperature scaling that training ends with, fitted on the
            validation logits of each epoch: the model as it will be used; steadier than AUROC on
            a small validation split), ``"log_loss"`` (before calibration, which also counts the
            over-confidence that calibration will remove, and so stops early) or ``"auroc"``.
        batch_size: patients per step.
        lr, weight_decay: AdamW settings.
        warmup_fraction: share of the steps with a linear learning-rate warm-up before the cosine decay.
        grad_clip: gradient norm clip.
        seed: seeds the split-independent randomness (initialisation, shuffling, dropout).
        ensemble: k, models trained with seeds ``seed .. seed + k - 1`` into one bundle whose
            logits are their mean (each member stops early on its own).
        num_workers: DataLoader worker processes reading files (0 = in the main process).
        token_dim: width of every encoder's tokens.
        bins: quantile bins of the numerical embeddings of scalar tokens (tabular numbers, sensor
            statistics).
        modality_dropout_ramp: epochs over which modality dropout (the fusion setting
            ``modality_dropout``) rises linearly from 0 to its rate; 0 = the full rate from the start.
        sparsity_ramp: epochs over which the sparsity term rises linearly from 0 to its weight
            (``lambda_sparsity``), so gates are not shut before the model has learned what matters; 0
            (the default) = the full weight from the start.
        unimodal_warmup: epochs at the start in which the loss is only each modality head's own
            cross-entropy (on the patients that have that modality; needs additive fusion): every
            encoder learns what its own modality says before the joint head can lean on the easiest
            one. These epochs are never chosen by early stopping and do not use up its patience;
            0 (the default) = off.
        selection_epochs: epochs after the model is fit in which only the feature gates train,
            against the frozen predictor, with the sparsity weight ``selection_sparsity``
            (:mod:`pipelines.training.gate_selection`); the epoch with the lowest calibrated
            validation log-loss is kept if that is within ``selection_tolerance`` of the fitted
            model's (otherwise the gates stay as fitted). 0 = off.
        selection_sparsity: the weight of the share of open gates in the selection epochs.
        selection_tolerance: the most validation log-loss the selection may add.
        class_weights: ``None`` (plain cross-entropy; calibration fixes the base rate) or
            ``"balanced"`` (weights inverse to the training class frequencies).
        encoders: per modality kind, overrides of that encoder's config fields.
        fusion: overrides of :class:`deepwe_mm.DeepWeConfig` fields (hidden_dim, ablations, lambdas).
        target_sensitivity: choose the threshold for this sensitivity instead of Youden's J.
        text_cache: folder for cached note embeddings (None = ``<out>/../.text-cache``).
    """

    epochs: int = 30
    patience: int = 6
    early_stopping: str = "calibrated_log_loss"
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    ensemble: int = 1
    num_workers: int = 0
    token_dim: int = 32
    bins: int = 8
    modality_dropout_ramp: int = 5
    sparsity_ramp: int = 0
    unimodal_warmup: int = 0
    selection_epochs: int = 0
    selection_sparsity: float = 0.1
    selection_tolerance: float = 0.005
    class_weights: str | None = None
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    target_sensitivity: float | None = None
    text_cache: str | None = None

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.encoders if kind not in ENCODER_KINDS]
        if unknown:
            raise ValueError(
                f"train config encoders: unknown kinds {unknown}; known: {', '.join(ENCODER_KINDS)}"
            )
        if self.early_stopping not in STOPPING_SCORES:
            raise ValueError(
                f"train config early_stopping must be one of {', '.join(map(repr, STOPPING_SCORES))}, "
                f"got {self.early_stopping!r}"
            )
        if self.class_weights not in (None, "balanced"):
            raise ValueError(
                f"train config class_weights must be null or 'balanced', got {self.class_weights!r}"
            )
        if self.ensemble < 1:
            raise ValueError(f"train config ensemble must be >= 1, got {self.ensemble}")
        if self.modality_dropout_ramp < 0 or self.sparsity_ramp < 0:
            raise ValueError(
                "train config modality_dropout_ramp and sparsity_ramp must be >= 0, got "
                f"{self.modality_dropout_ramp} and {self.sparsity_ramp}"
            )
        if not 0 <= self.unimodal_warmup < self.epochs:
            raise ValueError(
                f"train config unimodal_warmup must be >= 0 and below epochs ({self.epochs}), "
                f"got {self.unimodal_warmup}"
            )
        if self.selection_epochs < 0 or self.selection_sparsity < 0 or self.selection_tolerance < 0:
            raise ValueError(
                "train config selection_epochs, selection_sparsity and selection_tolerance must be >= 0, "
                f"got {self.selection_epochs}, {self.selection_sparsity} and {self.selection_tolerance}"
            )
        if self.bins < 1:
            raise ValueError(f"train config bins must be >= 1, got {self.bins}")
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("train config needs epochs >= 1, batch_size >= 2 and patience >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{source}: unknown key {key!r}{hint} Known: {', '.join(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of overrides (plain data; nothing in it is ever evaluated)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))
