"""Sensor encoder for measurement series: per-variable, time-aware statistic tokens.

Bedside vitals and labs (PhysioNet 2012, a vitals CSV) are irregular, sparse measurements. What a
clinician — and a gradient-boosted model — reads from them is per variable: the first and last
value, the extremes, the mean, how often it was measured, how long ago the last measurement was and
where it is heading. This encoder emits exactly those, one token per (channel, statistic), named
``"Lactate (last)"``, ``"HR (slope)"``, so that feature weights weigh variables and statistics a
clinician can check, not hours.

Each statistic is embedded with a piecewise-linear encoding over training-quantile bins
(:class:`~encoders.numeric_embedding.PiecewiseLinearEmbedding`), which also clips extreme values at
the training quantiles. A channel never measured has all its statistics masked (never 0); the slope
needs two measurements at different times. One last token, ``"measured channels"``, embeds which
channels were measured at all, since being measured is itself informative.

The tokens of a channel form one group (:attr:`SensorVariableEncoder.token_groups`): the fusion
core weighs every token, then lets the channels interact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from encoders.base import ModalityEncoder
from encoders.numeric_embedding import DEFAULT_BINS, PiecewiseLinearEmbedding
from encoders.series_statistics import (  # noqa: F401  (public here too)
    SERIES_STATISTICS,
    SLOPE,
    GriddedSeries,
    SeriesStatistics,
    series_statistics,
)
from encoders.tokens import EncoderBatch, Tokens

PATTERN_TOKEN = "measured channels"


@dataclass(frozen=True)
class SensorVariableConfig:
    """Settings of :class:`SensorVariableEncoder`.

    Attributes:
        channels: C, the number of channels (the cohort spec's channel list).
        names: the C channel names, for token names (``ch0``... when empty).
        out_dim: token width D.
        bins: K, quantile bins of each statistic's numerical embedding.
        tokens: always ``"variables"`` (the ``sensor`` registry entry dispatches on it).
    """

    channels: int
    names: tuple[str, ...] = ()
    out_dim: int = 128
    bins: int = DEFAULT_BINS
    tokens: str = "variables"

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.channels < 1 or self.out_dim < 1 or self.bins < 1:
            raise ValueError(
                f"sensor variable encoder needs channels, out_dim and bins >= 1, got {self.channels}, "
                f"{self.out_dim} and {self.bins}"
            )
        if self.names and len(self.names) != self.channels:
            raise ValueError(f"sensor variable encoder: {len(self.names)} names for {self.channels} channels")
        if self.tokens != "variables":
            raise ValueError(f"SensorVariableConfig.tokens must be 'variables', got {self.tokens!r}")

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.names or tuple(f"ch{c}" for c in range(self.channels))


class SensorVariableEncoder(ModalityEncoder):
    """One token per (channel, statistic), plus the measured-channels token.

    Args:
        config: channels, names, width and bins.
    """

    kind: ClassVar[str] = "sensor"

    def __init__(self, config: SensorVariableConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        stats = len(SERIES_STATISTICS)
        # Pooled tokens: the per-statistic bias must be large enough to tell the tokens apart.
        self.statistics = PiecewiseLinearEmbedding(
            config.channels * stats, config.bins, config.out_dim, bias_std=1.0
        )
        self.pattern = nn.Linear(config.channels, config.out_dim)
        self.norm = nn.LayerNorm(config.out_dim)
        self.token_names = [
            *(f"{channel} ({stat})" for channel in config.channel_names for stat in SERIES_STATISTICS),
            PATTERN_TOKEN,
        ]
        # The tokens of channel c are group c; the measured-channels token is a group of its own.
        self.token_groups = tuple(
            [c for c in range(config.channels) for _ in SERIES_STATISTICS] + [config.channels]
        )

    def example_samples(self, n: int, rng: np.random.Generator) -> list[GriddedSeries]:
        """``n`` hourly series of 3 to 12 hours, each with some channels never measured."""
        from encoders.readers.sensor_files import SensorArray

        channels = self.config.channels
        samples: list[GriddedSeries] = []
        for _ in range(n):
            length = int(rng.integers(3, 13))
            observed = rng.random((length, channels)) < 0.4
            observed[:, rng.random(channels) < 0.3] = False
            observed[0, 0] = True
            values = np.where(observed, rng.normal(5.0, 3.0, (length, channels)), 0.0)
            samples.append(
                SensorArray(values.astype(np.float32), observed, self.config.channel_names, 1 / 3600, 0.0)
            )
        return samples

    def collate(self, samples: Sequence[GriddedSeries | SeriesStatistics | None]) -> EncoderBatch:
        """Statistics per patient.

        Args:
            samples: per patient a gridded series (``values``/``observed`` (T, C)), its
                :class:`SeriesStatistics` (computed once by the data pipeline), or None.

        Returns:
            tensors ``statistics`` (B, C, S) float32 and ``observed`` (B, C, S) bool.

        Raises:
            ValueError: a sample has the wrong number of channels.
        """
        channels, stats = self.config.channels, len(SERIES_STATISTICS)
        values = np.zeros((len(samples), channels, stats), dtype=np.float32)
        observed = np.zeros((len(samples), channels, stats), dtype=bool)
        for row, sample in enumerate(samples):
            if sample is None:
                continue
            if not isinstance(sample, SeriesStatistics):
                if np.asarray(sample.values).ndim != 2 or np.asarray(sample.values).shape[1] != channels:
                    raise ValueError(
                        f"sensor sample {row}: expected values of shape (T, {channels}), "
                        f"got {np.asarray(sample.values).shape}"
                    )
                sample = series_statistics(sample)
            if sample.values.shape != (channels, stats):
                raise ValueError(
                    f"sensor sample {row}: expected statistics of shape ({channels}, {stats}), got {sample.values.shape}"
                )
            values[row], observed[row] = sample.values, sample.observed
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        return EncoderBatch(
            tensors={"statistics": torch.from_numpy(values), "observed": torch.from_numpy(observed)},
            present=present,
            names=[self.token_names for _ in samples],
        )

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, C * S + 1, D); ``mask`` True for observed statistics and for the
        measured-channels token of a present patient."""
        statistics, observed = batch.tensors["statistics"], batch.tensors["observed"]
        rows = statistics.shape[0]
        tokens = self.statistics(statistics.reshape(rows, -1))
        measured = observed.any(dim=2).float()
        tokens = torch.cat([tokens, self.pattern(measured)[:, None]], dim=1)
        mask = torch.cat([observed.reshape(rows, -1), torch.ones(rows, 1, dtype=torch.bool)], dim=1)
        return Tokens(values=self.norm(tokens), mask=mask & batch.present[:, None], names=batch.names)


def build(**config: Any) -> SensorVariableEncoder:
    return SensorVariableEncoder(SensorVariableConfig(**config))
