"""An ensemble of DeepWe cores, one per training seed, that behaves like one core.

Member ``k`` reads its own slice of the token width: the caller concatenates the members' tokens
along the last dimension (``D_m = k · d_m``), so one forward of all encoders feeds all members. The
ensemble's logits are the mean of the members' logits; its feature and modality weights are the
means of the members' weights (absent modalities and masked tokens stay exactly 0); its fused
embedding is the concatenation of the members' (the reference cohort stores all of them). The
neighbours shown are the first member's, since each member chooses its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from deepwe_mm.model import DeepWe
from deepwe_mm.outputs import DeepWeOutput
from deepwe_mm.patient_graph import ReferenceCohort


class DeepWeEnsemble(nn.Module):
    """``k`` :class:`DeepWe` members with the same config, averaged.

    Args:
        members: the trained cores, at least one, all with the same modalities and widths.
    """

    def __init__(self, members: Sequence[DeepWe]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(member.config != members[0].config for member in members):
            raise ValueError("ensemble members must share one DeepWeConfig")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    @property
    def cores(self) -> list[DeepWe]:
        """The members, typed (``nn.ModuleList`` yields plain modules)."""
        return cast("list[DeepWe]", list(self.members))

    def _slices(self, values: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
        """Each member's share of the token width: (B, T, k · d_m) -> k x (B, T, d_m)."""
        k = len(self.members)
        parts: list[dict[str, Tensor]] = [{} for _ in range(k)]
        for name, value in values.items():
            width = self.config.modality_dims[name]
            if value.shape[-1] != k * width:
                raise ValueError(
                    f"values[{name!r}] must have width {k} x {width} for this ensemble, got {value.shape[-1]}"
                )
            for i, chunk in enumerate(value.split(width, dim=-1)):
                parts[i][name] = chunk
        return parts

    def forward(
        self,
        values: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        labels: Tensor | None = None,
        ids: Tensor | None = None,
    ) -> DeepWeOutput:
        """Arguments as :meth:`DeepWe.forward`, with each value's width ``k`` times the member's."""
        outputs = [
            member(part, masks, present, labels, ids)
            for member, part in zip(self.cores, self._slices(values), strict=True)
        ]
        first = outputs[0]
        return DeepWeOutput(
            logits=torch.stack([o.logits for o in outputs]).mean(0),
            fused=torch.cat([o.fused for o in outputs], dim=-1),
            feature_weights={
                m: torch.stack([o.feature_weights[m] for o in outputs]).mean(0) for m in first.feature_weights
            },
            token_masks=first.token_masks,
            modality_weights=torch.stack([o.modality_weights for o in outputs]).mean(0),
            modality_present=first.modality_present,
            modalities=first.modalities,
            neighbours=first.neighbours,
            neighbour_weights=first.neighbour_weights,
            open_probabilities=None
            if first.open_probabilities is None
            else {
                m: torch.stack([o.open_probabilities[m] for o in outputs]).mean(0)
                for m in first.open_probabilities
            },
            modality_logits=None
            if first.modality_logits is None
            else torch.stack([o.modality_logits for o in outputs]).mean(0),
        )

    def embed(
        self, values: Mapping[str, Tensor], masks: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> Tensor:
        """(B, k · H) the members' fused embeddings side by side."""
        return torch.cat(
            [
                member.embed(part, masks, present)
                for member, part in zip(self.cores, self._slices(values), strict=True)
            ],
            dim=-1,
        )

    def set_reference(
        self, embeddings: Tensor, ids: Sequence[str] | None = None, outcomes: Tensor | None = None
    ) -> None:
        """Give member ``i`` its slice of the (R, k · H) reference embeddings from :meth:`embed`."""
        hidden = self.config.hidden_dim
        if embeddings.dim() != 2 or embeddings.shape[1] != hidden * len(self.members):
            raise ValueError(
                f"reference embeddings must be (R, {hidden * len(self.members)}), got {tuple(embeddings.shape)}"
            )
        for member, chunk in zip(self.cores, embeddings.split(hidden, dim=1), strict=True):
            member.set_reference(chunk, ids, outcomes)

    @property
    def reference(self) -> ReferenceCohort | None:
        references = [member.reference for member in self.cores]
        present = [r for r in references if r is not None]
        if len(present) < len(references):  # members get their references together: all or none
            return None
        return ReferenceCohort(
            torch.cat([r.embeddings for r in present], dim=1), present[0].ids, present[0].outcomes
        )

    def clear_reference(self) -> None:
        for member in self.cores:
            member.clear_reference()

    @torch.no_grad()
    def shift_positive_logit(self, shift: float) -> None:
        """Add ``shift`` to the positive-class logit of every member (so to the mean)."""
        for member in self.cores:
            member.shift_positive_logit(shift)
