"""The surface every modality encoder has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from encoders.tokens import EncoderBatch, Tokens


class ModalityEncoder(nn.Module):
    """Turns the arrays of one modality into tokens.

    ``collate`` runs in the data pipeline (no gradients): it batches reader outputs, with ``None``
    for a patient who lacks the modality, into an :class:`EncoderBatch`. ``forward`` runs in the model
    and returns :class:`Tokens` of width ``out_dim``.
    """

    kind: ClassVar[str]
    out_dim: int

    def collate(self, samples: Sequence[Any | None]) -> EncoderBatch:
        raise NotImplementedError

    def forward(self, batch: EncoderBatch) -> Tokens:
        raise NotImplementedError
