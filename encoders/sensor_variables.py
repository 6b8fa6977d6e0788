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

With ``trajectory`` on, each channel also gets a time-aware token, ``"Lactate (trajectory)"``: a
learned reading of its measurements at their own times (:mod:`encoders.sensor_trajectory`).

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
from encoders.sensor_trajectory import ChannelTrajectories
from encoders.series_statistics import (  # noqa: F401  (public here too)
    MEAN,
    SERIES_STATISTICS,
    SLOPE,
    GriddedSeries,
    SeriesObservations,
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
        trajectory: also one time-aware token per channel read from its measurements
            (:class:`~encoders.sensor_trajectory.ChannelTrajectories`).
        trajectory_heads: attention heads of that reading (the most up to this that divide
            ``out_dim``).
        max_observations: the most recent measurements a trajectory reads per patient.
    """

    channels: int
    names: tuple[str, ...] = ()
    out_dim: int = 128
    bins: int = DEFAULT_BINS
    tokens: str = "variables"
    trajectory: bool = False
    trajectory_heads: int = 4
    max_observations: int = 1024

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
        if self.trajectory_heads < 1 or self.max_observations < 1:
            raise ValueError(
                "sensor variable encoder needs trajectory_heads and max_observations >= 1, got "
                f"{self.trajectory_heads} and {self.max_observations}"
            )

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.names or tuple(f"ch{c}" for c in range(self.channels))


class SensorVariableEncoder(ModalityEncoder):
    """One token per (channel, statistic), with ``trajectory`` one per channel more, plus the
    measured-channels token.

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
        self.trajectories = (
            ChannelTrajectories(config.channels, config.bins, config.out_dim, config.trajectory_heads)
            if config.trajectory
            else None
        )
        channels = range(config.channels)
        trajectory = channels if config.trajectory else range(0)
        self.token_names = [
            *(f"{channel} ({stat})" for channel in config.channel_names for stat in SERIES_STATISTICS),
            *(f"{config.channel_names[c]} (trajectory)" for c in trajectory),
            PATTERN_TOKEN,
        ]
        # The tokens of channel c are group c; the measured-channels token is a group of its own.
        self.token_groups = tuple(
            [c for c in channels for _ in SERIES_STATISTICS] + list(trajectory) + [config.channels]
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
            tensors ``statistics`` (B, C, S) float32 and ``observed`` (B, C, S) bool; with
            ``trajectory`` also the most recent ``max_observations`` measurements, padded to the
            longest N of the batch: ``hours`` (B, N) float32 before the end, ``channel`` (B, N)
            long, ``reading`` (B, N) float32 and ``measurement`` (B, N) bool (False = padding).

        Raises:
            ValueError: a sample has the wrong number of channels, or trajectory tokens need the
                measurements of a sample whose statistics were computed without them.
        """
        channels, stats = self.config.channels, len(SERIES_STATISTICS)
        values = np.zeros((len(samples), channels, stats), dtype=np.float32)
        observed = np.zeros((len(samples), channels, stats), dtype=bool)
        kept: list[SeriesObservations | None] = []
        for row, sample in enumerate(samples):
            if sample is None:
                kept.append(None)
                continue
            if not isinstance(sample, SeriesStatistics):
                if np.asarray(sample.values).ndim != 2 or np.asarray(sample.values).shape[1] != channels:
                    raise ValueError(
                        f"sensor sample {row}: expected values of shape (T, {channels}), "
                        f"got {np.asarray(sample.values).shape}"
                    )
                sample = series_statistics(sample, keep_observations=self.config.trajectory)
            if sample.values.shape != (channels, stats):
                raise ValueError(
                    f"sensor sample {row}: expected statistics of shape ({channels}, {stats}), got {sample.values.shape}"
                )
            if self.config.trajectory and sample.observations is None:
                raise ValueError(f"sensor sample {row}: trajectory tokens need its measurements")
            values[row], observed[row] = sample.values, sample.observed
            kept.append(sample.observations)
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        tensors = {"statistics": torch.from_numpy(values), "observed": torch.from_numpy(observed)}
        if self.config.trajectory:
            tensors |= _padded_measurements(kept, self.config.max_observations)
        return EncoderBatch(tensors=tensors, present=present, names=[self.token_names for _ in samples])

    def scalar_features(self, batch: EncoderBatch) -> torch.Tensor:
        """(B, C * S): every channel's statistics, channel-major; NaN where not observed."""
        statistics, observed = batch.tensors["statistics"], batch.tensors["observed"]
        return statistics.masked_fill(~observed, float("nan")).reshape(statistics.shape[0], -1)

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, C * S [+ C] + 1, D): the statistics, the trajectories (with
        ``trajectory``) and the measured-channels token; ``mask`` True for observed statistics,
        channels with a measurement and the measured-channels token of a present patient."""
        statistics, observed = batch.tensors["statistics"], batch.tensors["observed"]
        rows = statistics.shape[0]
        parts = [self.statistics(statistics.reshape(rows, -1))]
        masks = [observed.reshape(rows, -1)]
        if self.trajectories is not None:
            trajectories, measured_channels = self._trajectories(batch)
            parts.append(trajectories)
            masks.append(measured_channels)
        measured = observed.any(dim=2).float()
        tokens = torch.cat([*parts, self.pattern(measured)[:, None]], dim=1)
        mask = torch.cat([*masks, torch.ones(rows, 1, dtype=torch.bool, device=observed.device)], dim=1)
        return Tokens(values=self.norm(tokens), mask=mask & batch.present[:, None], names=batch.names)

    def _trajectories(self, batch: EncoderBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, D) trajectory tokens and (B, C) bool: each measurement's value is coded over the
        quantile bins of its channel's mean (clipped at them, like the statistics)."""
        assert self.trajectories is not None
        row, position = batch.tensors["measurement"].nonzero(as_tuple=True)  # real ones, no padding
        channel = batch.tensors["channel"][row, position]
        reading = batch.tensors["reading"][row, position]
        bins = self.config.bins
        edges = self.statistics.edges.view(self.config.channels, len(SERIES_STATISTICS), bins + 1)[:, MEAN]
        low, high = edges[channel, :-1], edges[channel, 1:]  # (M, K)
        codes = ((reading.unsqueeze(-1) - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
        hours = batch.tensors["hours"][row, position]
        return self.trajectories(hours, channel, codes, row, batch.tensors["measurement"].shape[0])


def _padded_measurements(
    observations: Sequence[SeriesObservations | None], most: int
) -> dict[str, torch.Tensor]:
    """The last ``most`` measurements of each patient, padded to the longest of the batch."""
    kept = [None if o is None else _last(o, most) for o in observations]
    length = max([1, *(len(o.value) for o in kept if o is not None)])
    hours = np.zeros((len(kept), length), dtype=np.float32)
    channel = np.zeros((len(kept), length), dtype=np.int64)
    reading = np.zeros((len(kept), length), dtype=np.float32)
    real = np.zeros((len(kept), length), dtype=bool)
    for row, o in enumerate(kept):
        if o is None:
            continue
        n = len(o.value)
        hours[row, :n], channel[row, :n], reading[row, :n], real[row, :n] = (
            o.hours_before_end,
            o.channel,
            o.value,
            True,
        )
    return {
        "hours": torch.from_numpy(hours),
        "channel": torch.from_numpy(channel),
        "reading": torch.from_numpy(reading),
        "measurement": torch.from_numpy(real),
    }


def _last(observations: SeriesObservations, most: int) -> SeriesObservations:
    if len(observations.value) <= most:
        return observations
    return SeriesObservations(
        observations.hours_before_end[-most:], observations.channel[-most:], observations.value[-most:]
    )


def build(**config: Any) -> SensorVariableEncoder:
    return SensorVariableEncoder(SensorVariableConfig(**config))
