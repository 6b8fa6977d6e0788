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
    # Set by a model whose trees read this encoder's per-file summaries: how many numbers each
    # summary holds. ``collate`` callers then add them to the batch (:meth:`summary_tensor`).
    summary_width: int | None = None

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

    def feature_source(self) -> str | None:
        """Where this encoder's numbers for a tree model come from: ``"batch"``
        (:meth:`scalar_features`), ``"sample"`` (:meth:`sample_summary`) or None (nowhere)."""
        if type(self).scalar_features is not ModalityEncoder.scalar_features:
            return "batch"
        if type(self).sample_summary is not ModalityEncoder.sample_summary:
            return "sample"
        return None

    def summary_tensor(self, samples: Sequence[Any | None], width: int) -> torch.Tensor:
        """(B, width) float64 :meth:`sample_summary` of each sample; a row of NaN for a patient
        without the modality (None)."""
        return torch.from_numpy(
            summary_matrix([None if s is None else self.sample_summary(s) for s in samples], width)
        )

    def sample_summary(self, sample: Any) -> dict[str, float] | None:
        """Named numbers of one patient's reader output (a sample as ``collate`` takes it, never
        None) that a tree model can read, with the same names in the same order for every sample
        of the modality (:mod:`encoders.summaries`); None where the encoder has none, or gives them
        per batch instead (:meth:`scalar_features`)."""
        return None


def summary_matrix(summaries: Sequence[dict[str, float] | None], width: int | None = None) -> np.ndarray:
    """(N, F) float64 of per-patient summaries that all name the same F numbers; a row of NaN for
    None. ``width`` F defaults to the first summary's length (0 when every row is None)."""
    if width is None:
        width = next((len(s) for s in summaries if s is not None), 0)
    matrix = np.full((len(summaries), width), np.nan)
    for row, summary in enumerate(summaries):
        if summary is not None:
            matrix[row] = list(summary.values())
    return matrix
