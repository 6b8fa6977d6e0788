"""DeepWe: feature gates -> modality logits + attention interaction -> patient graph -> class logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepwe_mm.config import DeepWeConfig
from deepwe_mm.gates import FeatureGate, PatientContext, mean_pool, random_keep
from deepwe_mm.modality_attention import MeanFusion, ModalityAttention, drop_modalities
from deepwe_mm.outputs import DeepWeOutput
from deepwe_mm.patient_graph import MemoryBank, PatientGraph, ReferenceCohort
from deepwe_mm.token_mixer import TokenMixer, pool_groups


@dataclass
class _Fused:
    fused: Tensor  # (B, H)
    feature_weights: dict[str, Tensor]  # m -> (B, T_m)
    open_probabilities: dict[str, Tensor]  # m -> (B, T_m)
    token_masks: dict[str, Tensor]  # m -> (B, T_m) bool
    modality_weights: Tensor  # (B, M)
    present: Tensor  # (B, M) bool
    modality_logits: Tensor | None  # (B, M, C), or None without additive fusion
    encoder_logits: Tensor | None  # (B, M, C) in training with encoder heads, else None


class DeepWe(nn.Module):
    """The DeepWe fusion core over named modalities of tokens.

    Per modality m, the caller passes token values (B, T_m, D_m), a token mask (B, T_m) (True =
    observed token) and a present flag (B,). A modality that is absent, or present without one
    observed token, takes no part: its tokens get weight 0 and its slot weight 0, and whatever its
    values hold (NaN included) never reaches a computation — inputs are cleaned with ``torch.where``
    once, at the start. A patient without any usable modality is an error.

    The patient graph attends to a candidate pool of stored fused embeddings:

    - training: the memory bank (detached fused embeddings of recent batches, ``memory_size``
      rows) plus the rest of the batch (a patient is never its own neighbour);
    - eval with a reference cohort (:meth:`set_reference`): that cohort, fixed;
    - eval without one: the memory bank as training left it (empty after loading), else no
      neighbours (the message is 0).

    In eval mode the pool never contains the batch, so a patient's output does not depend on its
    batch mates.

    The logits add evidence (``additive_fusion``): each modality that takes part contributes its
    own logits through a per-modality head on its token (trained with an auxiliary cross-entropy of
    its own, see :class:`DeepWeLoss`), each absent modality a learned "missing" bias, and the
    attention-fused embedding (after the graph) an interaction term on top::

        logits = head(graph(fuse(tokens))) + Σ_present head_m(token_m) + Σ_absent bias_m

    Args:
        config: the whole constructor contract.
    """

    reference_embeddings: Tensor | None
    reference_outcomes: Tensor | None

    def __init__(self, config: DeepWeConfig) -> None:
        super().__init__()
        self.config = config
        hidden, dims = config.hidden_dim, config.modality_dims
        gate = config.gate if config.use_feature_gates else None
        # Lists in config order, not dicts by name: a modality may be called "values" or "a.b".
        self.gates = nn.ModuleList(
            FeatureGate(
                dims[m],
                hidden,
                gate,
                config.gate_context,
                config.gate_leak,
                config.token_counts.get(m) if config.gate_positions else None,
            )
            for m in config.modalities
        )
        self.context = (
            PatientContext([dims[m] for m in config.modalities], hidden)
            if gate is not None and config.gate_context
            else None
        )
        self.modality_dropout = config.modality_dropout
        self.flat = [config.flat_readout and m in config.token_counts for m in config.modalities]
        # A modality read out flat, or without mixing layers, holds an empty slot (nn.Identity).
        self.mixed = [
            config.layers_of(m) > 0 and not flat for m, flat in zip(config.modalities, self.flat, strict=True)
        ]
        self.mixers = (
            nn.ModuleList(
                TokenMixer(dims[m], config.layers_of(m), config.token_heads, config.dropout)
                if mix
                else nn.Identity()
                for m, mix in zip(config.modalities, self.mixed, strict=True)
            )
            if any(self.mixed)
            else None
        )
        self.groups = [
            None if m not in config.token_groups else torch.tensor(config.token_groups[m], dtype=torch.long)
            for m in config.modalities
        ]
        self.projections = nn.ModuleList(
            modality_projection(dims[m] * (config.token_counts[m] if flat else 1), hidden, config.projection)
            for m, flat in zip(config.modalities, self.flat, strict=True)
        )
        self.modality_embedding = nn.Parameter(torch.randn(len(dims), hidden) * 0.02)
        self.fusion: nn.Module = (
            ModalityAttention(hidden, config.n_heads, config.dropout)
            if config.use_modality_attention
            else MeanFusion(hidden)
        )
        self.graph = (
            PatientGraph(hidden, config.graph_top_k, config.dropout, config.n_classes, config.graph_outcomes)
            if config.use_graph
            else None
        )
        self.memory = (
            MemoryBank(config.memory_size, hidden) if config.use_graph and config.memory_size else None
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(hidden, config.n_classes))
        n_mod, n_classes = len(dims), config.n_classes
        self.modality_heads = (
            nn.ModuleList(nn.Linear(hidden, n_classes) for _ in config.modalities)
            if config.additive_fusion
            else None
        )
        self.missing_logits = nn.Parameter(torch.zeros(n_mod, n_classes)) if config.additive_fusion else None
        self.encoder_heads = (
            nn.ModuleList(nn.Linear(dims[m], n_classes) for m in config.modalities)
            if config.lambda_encoder > 0
            else None
        )
        self.register_buffer("reference_embeddings", None, persistent=False)
        self.register_buffer("reference_outcomes", None, persistent=False)
        self.reference_ids: tuple[str, ...] | None = None

    def forward(
        self,
        values: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        labels: Tensor | None = None,
        ids: Tensor | None = None,
    ) -> DeepWeOutput:
        """Predict and weigh.

        Args:
            values: modality -> (B, T_m, D_m) float token values, one entry per configured modality.
            masks: modality -> (B, T_m) bool, True for observed real tokens.
            present: modality -> (B,) bool, True where the patient has the modality.
            labels: training only: (B,) long outcomes, which batch mates and later batches may read
                as neighbours' outcomes (never a patient its own).
            ids: training only: (B,) long patient ids (dataset positions), so that a patient stored
                in the memory bank by an earlier batch is never its own neighbour.

        Returns:
            :class:`DeepWeOutput` with logits (B, C) and every weight.

        Raises:
            ValueError: a modality is missing or unknown, a shape or dtype is wrong, or a patient has
                no modality present with an observed token.
        """
        parts = self._fuse(values, masks, present)
        embedding, neighbours, neighbour_weights = parts.fused, None, None
        if self.graph is not None:
            pool = self._candidates(
                parts.fused, labels if self.training else None, ids if self.training else None
            )
            embedding, neighbours, neighbour_weights = self.graph(parts.fused, *pool)
            if self.training and self.memory is not None:
                self.memory.push(parts.fused, labels, ids)
        logits = self.head(embedding)
        if parts.modality_logits is not None:
            logits = logits + parts.modality_logits.sum(1)
        return DeepWeOutput(
            logits=logits,
            fused=parts.fused,
            feature_weights=parts.feature_weights,
            open_probabilities=parts.open_probabilities,
            modality_logits=parts.modality_logits,
            encoder_logits=parts.encoder_logits,
            token_masks=parts.token_masks,
            modality_weights=parts.modality_weights,
            modality_present=parts.present,
            modalities=self.config.modalities,
            neighbours=neighbours,
            neighbour_weights=neighbour_weights,
        )

    def embed(
        self,
        values: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
    ) -> Tensor:
        """(B, H) fused embeddings, before the patient graph: the rows of a reference cohort.

        Call it in eval mode (no modality dropout) and under ``torch.no_grad()`` to build the
        reference at the end of training. Arguments as in :meth:`forward`.
        """
        return self._fuse(values, masks, present).fused

    def set_reference(
        self,
        embeddings: Tensor,
        ids: Sequence[str] | None = None,
        outcomes: Tensor | None = None,
    ) -> None:
        """Fix the reference cohort that the graph attends to in eval mode.

        Stored as non-persistent buffers (they follow ``.to(device)`` but are not in the state
        dict; the bundle saves :attr:`reference` on its own).

        Args:
            embeddings: (R, H) fused embeddings from :meth:`embed`.
            ids: R unique pseudonymous patient ids, or None.
            outcomes: (R,) outcomes, kept for display only, or None.

        Raises:
            ValueError: a shape does not match, an embedding is not finite, or ids repeat.
        """
        hidden = self.config.hidden_dim
        if embeddings.dim() != 2 or embeddings.shape[1] != hidden or embeddings.shape[0] < 1:
            raise ValueError(
                f"reference embeddings must be (R, {hidden}) with R >= 1, got {tuple(embeddings.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ValueError("reference embeddings must be finite")
        rows = embeddings.shape[0]
        if ids is not None and (len(ids) != rows or len(set(ids)) != rows):
            raise ValueError(f"reference ids must be {rows} unique strings, got {len(ids)} ids")
        if outcomes is not None and tuple(outcomes.shape) != (rows,):
            raise ValueError(f"reference outcomes must be ({rows},), got {tuple(outcomes.shape)}")
        anchor = self.modality_embedding
        self.reference_embeddings = embeddings.detach().to(device=anchor.device, dtype=anchor.dtype)
        self.reference_outcomes = None if outcomes is None else outcomes.detach().to(anchor.device)
        self.reference_ids = None if ids is None else tuple(str(i) for i in ids)

    @property
    def reference(self) -> ReferenceCohort | None:
        """The reference cohort set by :meth:`set_reference`, or None."""
        if self.reference_embeddings is None:
            return None
        return ReferenceCohort(self.reference_embeddings, self.reference_ids, self.reference_outcomes)

    @torch.no_grad()
    def shift_positive_logit(self, shift: float) -> None:
        """Add ``shift`` to the positive-class bias of the output layer, so that every use of the
        weights (prediction, explanations, the dashboard) gives the shifted logits."""
        last = self.head[-1]
        if not isinstance(last, nn.Linear):
            raise TypeError("the output layer must be linear")
        last.bias[1] += shift

    def clear_reference(self) -> None:
        """Drop the reference cohort (eval falls back to the memory bank, then to no neighbours)."""
        self.reference_embeddings = None
        self.reference_outcomes = None
        self.reference_ids = None

    def _candidates(
        self, fused: Tensor, labels: Tensor | None, ids: Tensor | None
    ) -> tuple[Tensor | None, int | None, Tensor | None, Tensor | None]:
        """The graph's neighbour pool (R, H); in training, where the batch starts in it; the
        candidates' (R,) outcomes (-1 unknown) or None; and (B, R) candidates excluded as the
        patient itself, or None."""
        memory = self.memory
        stored = memory.contents().to(fused.dtype) if memory is not None else None
        if self.training:
            unknown = torch.full((fused.shape[0],), -1, dtype=torch.long, device=fused.device)
            batch_outcomes = unknown if labels is None else labels.long()
            if memory is None or stored is None or stored.shape[0] == 0:
                return fused, 0, batch_outcomes, None
            excluded = None
            if ids is not None:
                excluded = ids.long().unsqueeze(1) == memory.stored_ids().unsqueeze(0)
                excluded = torch.cat(
                    [excluded, torch.zeros(len(ids), len(ids), dtype=torch.bool, device=ids.device)], 1
                )
            outcomes = torch.cat([memory.stored_outcomes(), batch_outcomes])
            return torch.cat([stored, fused]), stored.shape[0], outcomes, excluded
        if self.reference_embeddings is not None:
            return self.reference_embeddings.to(fused.dtype), None, self.reference_outcomes, None
        if memory is not None and stored is not None and stored.shape[0] > 0:
            return stored, None, memory.stored_outcomes(), None
        return None, None, None, None

    def _fuse(
        self,
        values: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
    ) -> _Fused:
        names = self.config.modalities
        self._check_inputs(values, masks, present)
        usable = {m: masks[m] & present[m].unsqueeze(-1) for m in names}
        taking_part = torch.stack([usable[m].any(-1) for m in names], dim=1)  # (B, M)
        empty = (~taking_part.any(-1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"batch rows {empty[:10]} have no modality present with an observed token; every "
                f"patient needs at least one of {list(names)}"
            )
        if self.training:
            taking_part = drop_modalities(taking_part, self.modality_dropout)
        valid, clean = [], []
        for i, m in enumerate(names):
            valid.append(usable[m] & taking_part[:, i : i + 1])
            zero = torch.zeros((), dtype=values[m].dtype, device=values[m].device)
            clean.append(torch.where(valid[i].unsqueeze(-1), values[m], zero))
        context = None if self.context is None else self.context(clean, valid)
        weights, opened, token_masks, tokens = {}, {}, {}, []
        for i, m in enumerate(names):
            keep = random_keep(valid[i], self.config.token_dropout) if self.training else None
            weights[m], opened[m], gated = self.gates[i](clean[i], valid[i], context, keep)
            token = self.projections[i](self._read_out(i, gated, valid[i])) + self.modality_embedding[i]
            tokens.append(torch.where(taking_part[:, i : i + 1], token, torch.zeros_like(token)))
            token_masks[m] = valid[i]
        stacked = torch.stack(tokens, dim=1)  # (B, M, H)
        fused, modality_weights = self.fusion(stacked, taking_part)
        return _Fused(
            fused,
            weights,
            opened,
            token_masks,
            modality_weights,
            taking_part,
            self._evidence(stacked, taking_part),
            self._encoder_evidence(clean, valid),
        )

    def _encoder_evidence(self, clean: list[Tensor], valid: list[Tensor]) -> Tensor | None:
        """Per modality (B, T_m, D_m) tokens, (B, T_m) bool -> (B, M, C): the encoder heads on the
        mean of the ungated tokens; None in eval mode or without encoder heads."""
        if self.encoder_heads is None or not self.training:
            return None
        return torch.stack(
            [head(mean_pool(clean[i], valid[i])) for i, head in enumerate(self.encoder_heads)], dim=1
        )

    def _evidence(self, tokens: Tensor, taking_part: Tensor) -> Tensor | None:
        """(B, M, H) modality tokens -> (B, M, C): each present modality's head logits, each
        absent one's learned missing bias; None without additive fusion."""
        if self.modality_heads is None or self.missing_logits is None:
            return None
        own = torch.stack([head(tokens[:, i]) for i, head in enumerate(self.modality_heads)], dim=1)
        return torch.where(taking_part.unsqueeze(-1), own, self.missing_logits.unsqueeze(0).to(own.dtype))

    def _read_out(self, i: int, gated: Tensor, valid: Tensor) -> Tensor:
        """(B, T, D) gated tokens of modality ``i`` -> (B, T · D) concatenated (flat readout; the
        gated tokens are 0 where not valid), else (B, D): grouped, mixed and summarised, or their
        mean when token mixing is off."""
        if self.flat[i]:
            count = self.config.token_counts[self.config.modalities[i]]
            if gated.shape[1] != count:
                raise ValueError(
                    f"modality {self.config.modalities[i]!r} has {gated.shape[1]} tokens but its "
                    f"flat readout expects {count} (token_counts)"
                )
            return gated.reshape(gated.shape[0], -1)
        groups = self.groups[i]
        if groups is not None:
            if groups.shape[0] != gated.shape[1]:
                raise ValueError(
                    f"modality {self.config.modalities[i]!r} has {gated.shape[1]} tokens but "
                    f"token_groups gives {groups.shape[0]}"
                )
            groups = groups.to(gated.device)
            gated, valid = pool_groups(gated, valid, groups, int(groups.max()) + 1)
        if self.mixers is None or not self.mixed[i]:
            return mean_pool(gated, valid)
        return self.mixers[i](gated, valid)

    def _check_inputs(
        self,
        values: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
    ) -> None:
        names = set(self.config.modalities)
        for label, given in (("values", values), ("masks", masks), ("present", present)):
            missing, unknown = names - set(given), set(given) - names
            if missing or unknown:
                expected = list(self.config.modalities)
                raise ValueError(
                    f"{label} must hold exactly the configured modalities {expected}; missing "
                    f"{sorted(missing)}, unknown {sorted(unknown)} (pass an absent modality with "
                    f"present=False and any placeholder values)"
                )
        batch = None
        for m, dim in self.config.modality_dims.items():
            value, mask, flag = values[m], masks[m], present[m]
            if value.dim() != 3 or value.shape[-1] != dim or not value.is_floating_point():
                raise ValueError(
                    f"values[{m!r}] must be float (B, T, {dim}), got {value.dtype} {tuple(value.shape)}"
                )
            if mask.dtype != torch.bool or mask.shape != value.shape[:2]:
                raise ValueError(
                    f"masks[{m!r}] must be bool {tuple(value.shape[:2])}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            if flag.dtype != torch.bool or flag.shape != value.shape[:1]:
                raise ValueError(
                    f"present[{m!r}] must be bool ({value.shape[0]},), got {flag.dtype} {tuple(flag.shape)}"
                )
            if batch is not None and value.shape[0] != batch:
                raise ValueError(f"modality {m!r} has batch size {value.shape[0]}, others {batch}")
            batch = value.shape[0]


def modality_projection(width: int, hidden: int, kind: str) -> nn.Sequential:
    """(B, width) read-out gated tokens -> (B, hidden) modality token, LayerNorm last.

    ``"linear"``: a linear map. ``"mlp"``: ``Linear(width, 2·hidden)``, GELU, ``Linear(2·hidden,
    hidden)``: the modality's own head can then combine its variables non-additively.
    """
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(width, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden)
        )
    return nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden))
