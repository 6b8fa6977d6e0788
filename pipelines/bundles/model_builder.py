"""The multimodal model: one encoder per modality feeding the DeepWe fusion core.

``pipelines`` is the only place that knows both the encoders and the fusion core; the core sees
tokens and present flags, never encoder classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepwe_mm import DeepWe, DeepWeConfig, DeepWeEnsemble, DeepWeOutput
from deepwe_mm.tree_evidence import TreeEvidence, TreeShape
from encoders import create_encoder
from encoders.base import ModalityEncoder
from encoders.tokens import EncoderBatch, Tokens
from pipelines.cohorts.dataset import Batch


class MultimodalModel(nn.Module):
    """Encoders (``nn.ModuleDict`` by modality) + :class:`DeepWe`, and optionally the evidence of
    gradient-boosted trees on the encoders' scalar features, added to the core's logits.

    Args:
        encoders: modality name -> encoder, in the spec's order.
        core: the fusion core, configured for the same modalities and token widths.
        trees: the trees (:mod:`deepwe_mm.tree_evidence`), or None. They read
            :meth:`scalar_features`: each encoder's per-batch numbers or per-file summaries.
    """

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        core: DeepWe | DeepWeEnsemble,
        trees: TreeEvidence | None = None,
    ) -> None:
        super().__init__()
        if tuple(encoders) != core.config.modalities:
            raise ValueError(
                f"encoders {list(encoders)} do not match the core's {list(core.config.modalities)}"
            )
        self.encoders = nn.ModuleDict(encoders)
        self.core = core
        self.trees: TreeEvidence | None = None
        self.attach_trees(trees)

    def attach_trees(self, trees: TreeEvidence | None) -> None:
        """Set the model's trees (None: none). Encoders whose numbers are per-file summaries learn
        their summaries' width, so that collating adds the summaries to each batch."""
        self.trees = trees
        for name, encoder in self.encoders.items():
            per_file = trees is not None and encoder.feature_source() == "sample"
            encoder.summary_width = trees.shape.blocks.get(name) if per_file and trees is not None else None

    def scalar_features_of(self, name: str, item: EncoderBatch) -> Tensor:
        """(B, P_m) modality ``name``'s scalar features: its encoder's per-batch numbers, or the
        per-file summaries that collating added (see :meth:`attach_trees`)."""
        features = self.encoders[name].scalar_features(item)
        if features is None:
            features = item.tensors.get("summary")
        if features is None:
            raise ValueError(f"modality {name!r} gives no scalar features in this batch")
        return features

    def scalar_feature_blocks(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, P_m) its scalar features (:meth:`scalar_features_of`), in modality order."""
        return {name: self.scalar_features_of(name, batch.inputs[name]) for name in self.encoders}

    def scalar_features(self, batch: Batch) -> Tensor:
        """(B, P) every encoder's scalar features side by side, in modality order: what the trees
        read (the same numbers, in the same order, as the teacher they were fitted for)."""
        return torch.cat(list(self.scalar_feature_blocks(batch).values()), dim=1)

    def tree_evidence(
        self, blocks: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor | None:
        """(B, C) the trees' weighted log-odds for the scalar feature ``blocks`` (modality ->
        (B, P_m), :meth:`scalar_feature_blocks`), the features of a modality whose ``present`` flag
        (B,) is False read as NaN (as for a patient without it); None without trees or at weight 0.
        """
        if self.trees is None or not bool(self.trees.weight):
            return None
        parts = [
            block if present is None else block.masked_fill(~present[name].view(-1, 1), float("nan"))
            for name, block in blocks.items()
        ]
        return self.trees(torch.cat(parts, dim=1))

    def add_tree_evidence(self, output: DeepWeOutput, batch: Batch) -> DeepWeOutput:
        """``output`` with the trees' weighted log-odds added to its logits (unchanged without trees)."""
        if self.trees is None or not bool(self.trees.weight):
            return output
        evidence = self.trees(self.scalar_features(batch)).to(output.logits.dtype)
        return replace(output, logits=output.logits + evidence)

    def tokens(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Token values (B, T_m, D), masks (B, T_m) and present flags (B,) per modality."""
        values, masks = {}, {}
        for name, encoder in self.encoders.items():
            tokens = encoder(batch.inputs[name])
            values[name], masks[name] = tokens.values, tokens.mask
        return values, masks, batch.present()

    def forward(self, batch: Batch) -> DeepWeOutput:
        if self.training:  # the patient graph may read other training patients' outcomes
            output = self.core(*self.tokens(batch), labels=batch.labels, ids=batch.indices)
        else:
            output = self.core(*self.tokens(batch))
        return self.add_tree_evidence(output, batch)

    def embed(self, batch: Batch) -> Tensor:
        """(B, H) fused embeddings before the patient graph (rows of the reference cohort)."""
        return self.core.embed(*self.tokens(batch))


def set_numeric_edges(model: MultimodalModel, preprocessing: Mapping[str, Any]) -> None:
    """Give each encoder's numerical embedding the quantile bin edges fitted on the training split
    (they then travel with the weights)."""
    for name, edges in preprocessing.get("numeric_edges", {}).items():
        encoder = model.encoders[name]
        embedding = getattr(encoder, "numeric_embedding", None) or getattr(encoder, "statistics", None)
        if embedding is not None:
            embedding.set_edges(np.asarray(edges, dtype=np.float32))


def build_encoders(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, ModalityEncoder]:
    """Modality -> untrained encoder, from the ``encoders`` settings of ``config.json``."""
    return {name: create_encoder(s["encoder"], **s["config"]) for name, s in settings.items()}


def build_model(
    encoders: Mapping[str, Mapping[str, Any]],
    fusion: Mapping[str, Any],
    ensemble: int = 1,
    trees: Mapping[str, int] | None = None,
) -> MultimodalModel:
    """Rebuild a model from the ``encoders`` settings and the fusion config dict of ``config.json``,
    with ``ensemble`` members when it is more than 1, and empty trees of the ``trees`` shape
    (:class:`TreeShape` as a dict) when given."""

    def member() -> MultimodalModel:
        return MultimodalModel(build_encoders(encoders), DeepWe(DeepWeConfig.from_dict(fusion)))

    if ensemble < 1:
        raise ValueError(f"ensemble must be >= 1, got {ensemble}")
    model = member() if ensemble == 1 else ensemble_model([member() for _ in range(ensemble)])
    if trees is not None:
        model.attach_trees(TreeEvidence(TreeShape.from_dict(dict(trees))))
    return model


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

    def scalar_features(self, batch):
        return self.members[0].scalar_features(batch)

    def sample_summary(self, sample):
        return self.members[0].sample_summary(sample)

    def feature_source(self):
        return self.members[0].feature_source()

    def forward(self, batch):
        tokens = [member(batch) for member in self.members]
        values = torch.cat([t.values for t in tokens], dim=-1)
        return Tokens(values=values, mask=tokens[0].mask, names=tokens[0].names)


def ensemble_model(members: list[MultimodalModel]) -> MultimodalModel:
    """One model whose logits are the mean of ``members``' (same settings, different seeds)."""
    names = list(members[0].encoders)
    encoders = {name: EnsembleEncoder([m.encoders[name] for m in members]) for name in names}
    return MultimodalModel(encoders, DeepWeEnsemble([m.core for m in members]))


def text_model_identity(model: MultimodalModel) -> dict[str, dict[str, str]]:
    """Per text modality, the language model folder and the sha256 of its weights (preprocessing.json)."""
    return {
        name: {"model_dir": encoder.model_dir, "weights_sha256": encoder.weights_sha256()}
        for name, encoder in model.encoders.items()
        if encoder.kind == "text"
    }
