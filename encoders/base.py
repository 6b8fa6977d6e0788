"""The surface every modality encoder has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from encoders.tokens import EncoderBatch, Tokens


class ModalityEncoder(nn.Module):
    """Turns the arrays of one modality into tokens.

    ``collate`` runs in the data pipeline (no gradients): it batches reader outputs, with ``None``
    for a patient who lacks the modality, into an :class:`EncoderBatch`. ``forward`` runs in the model
    and returns :class:`Tokens` of width ``out_dim``.

    The contract every registered encoder keeps (``tests/encoders/test_conformance.py`` checks it):

    - it is registered as ``"<kind>"`` and as ``"<kind>-tiny"`` (odd sizes, for tests), and
      ``encoder.kind == "<kind>"``;
    - ``encoder.config`` is a frozen dataclass and ``create_encoder(name, **fields)`` takes its
      fields; fields without a default are data-dependent (variable names, channel count);
    - ``example_samples(n, rng)`` returns ``n`` reader-shaped samples for its config, never None,
      each with at least one observed token, the same for the same ``rng`` state;
    - a missing patient's tokens are all masked False; a present patient has an observed token.
    """

    kind: ClassVar[str]
    # True when every patient gets the same tokens in the same order (``token_names``), so the
    # fusion core may read them out by position.
    fixed_token_count: ClassVar[bool] = False
    out_dim: int
    config: Any

    def example_samples(self, n: int, rng: np.random.Generator) -> list[Any]:
        raise NotImplementedError

    def collate(self, samples: Sequence[Any | None]) -> EncoderBatch:
        raise NotImplementedError

    def forward(self, batch: EncoderBatch) -> Tokens:
        raise NotImplementedError

    def scalar_features(self, batch: EncoderBatch) -> torch.Tensor | None:
        """(B, F) float32 named numbers of a collated batch that a tree model can read (NaN where not
        observed, all NaN for a patient without the modality), in the same order for every batch;
        None where the encoder has none, or gives them per file instead (:meth:`sample_summary`)."""
        return None

    def sample_summary(self, sample: Any) -> dict[str, float] | None:
        """Named numbers of one patient's reader output (a sample as ``collate`` takes it, never
        None) that a tree model can read, with the same names in the same order for every sample
        of the modality (:mod:`encoders.summaries`); None where the encoder has none, or gives them
        per batch instead (:meth:`scalar_features`)."""
        return None
