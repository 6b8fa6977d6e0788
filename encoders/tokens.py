"""What an encoder hands to the fusion core: token values, a token mask and token names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class EncoderBatch:
    """A collated batch of one modality, ready for its encoder.

    Attributes:
        tensors: encoder-specific inputs, each with the batch as its first dimension.
        present: (B,) bool, True where the patient has this modality. Rows with False hold a
            placeholder that the encoder may process but the fusion core must ignore.
        names: per patient, the names of the tokens the encoder will emit (length T each).
    """

    tensors: dict[str, Tensor]
    present: Tensor
    names: list[list[str]] = field(default_factory=list)

    def to(self, device: torch.device | str) -> EncoderBatch:
        return EncoderBatch(
            tensors={key: value.to(device, non_blocking=True) for key, value in self.tensors.items()},
            present=self.present.to(device, non_blocking=True),
            names=self.names,
        )

    def __len__(self) -> int:
        return int(self.present.shape[0])


@dataclass
class Tokens:
    """The tokens of one modality for a batch.

    Attributes:
        values: (B, T, D) token embeddings.
        mask: (B, T) bool, True for real, observed tokens; False for padding and unobserved tokens.
        names: per patient, T token names (``"lactate"``, ``"t=00:00-01:00"``, ``"region 2,3"``).
    """

    values: Tensor
    mask: Tensor
    names: list[list[str]]

    def __post_init__(self) -> None:
        if self.values.dim() != 3 or self.mask.shape != self.values.shape[:2]:
            raise ValueError(
                f"tokens need values (B, T, D) and mask (B, T); got {tuple(self.values.shape)} "
                f"and {tuple(self.mask.shape)}"
            )
