"""Sensor encoder: a temporal CNN over a gridded multichannel series, one token per time window.

The input has ``2C`` channels, the values and the observation mask, so the network can tell a
measured 0 from a gap. Each stage cuts time into non-overlapping chunks of ``stride`` steps (a
convolution with kernel = stride) and mixes neighbouring chunks with a width-3 convolution; a
window is ``prod(strides)`` grid steps, and token ``i`` covers grid cells ``[i * W, (i + 1) * W)``,
named by its time since the start (``"t=0-3600s"``).

A window with no observation is masked out, and its activations are zeroed after every layer, so an
unobserved stretch and the padding that batches series of different lengths look the same: a
patient's tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders._registry import register_encoder
from encoders.base import ModalityEncoder
from encoders.sensor_variables import GriddedSeries, SensorVariableConfig, SensorVariableEncoder
from encoders.summaries import waveform_summary
from encoders.tokens import EncoderBatch, Tokens

SensorSample = GriddedSeries
"""What the sensor encoder reads of :class:`encoders.readers.sensor_files.SensorArray`."""


@dataclass(frozen=True)
class SensorEncoderConfig:
    """Settings of :class:`SensorEncoder`.

    Attributes:
        channels: C, the number of channels of the series (the cohort spec's channel list).
        out_dim: token width D.
        hidden: width of the CNN.
        strides: time downsampling per stage; a token covers ``prod(strides)`` grid steps (60 by
            default: one token per hour on a one-minute grid).
        tokens: always ``"windows"``; the ``sensor`` registry entry builds
            :class:`~encoders.sensor_variables.SensorVariableEncoder` for ``"variables"``.
    """

    channels: int
    out_dim: int = 128
    hidden: int = 64
    strides: tuple[int, ...] = (3, 4, 5)
    tokens: str = "windows"

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", tuple(self.strides))
        if self.tokens != "windows":
            raise ValueError(f"SensorEncoderConfig.tokens must be 'windows', got {self.tokens!r}")
        if self.channels < 1 or self.hidden < 1 or self.out_dim < 1:
            raise ValueError(
                f"sensor encoder needs channels, hidden and out_dim >= 1, got {self.channels}, "
                f"{self.hidden} and {self.out_dim}"
            )
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"sensor encoder strides must be positive, got {self.strides}")

    @property
    def window(self) -> int:
        """W, grid steps per token."""
        return math.prod(self.strides)


class _Stage(nn.Module):
    """Chunk time by ``stride``, then mix neighbouring chunks; unobserved chunks stay zero."""

    def __init__(self, in_channels: int, hidden: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.chunk = nn.Conv1d(in_channels, hidden, kernel_size=stride, stride=stride)
        self.mix = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)

    def forward(self, x: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C_in, L), seen (B, 1, L) float -> (B, hidden, L / stride), (B, 1, L / stride)."""
        seen = F.max_pool1d(seen, self.stride)
        x = F.gelu(self.chunk(x)) * seen
        return x + F.gelu(self.mix(x)) * seen, seen


class SensorEncoder(ModalityEncoder):
    """Time-window tokens from a masked temporal CNN.

    Args:
        config: channel count, widths and downsampling.
    """

    kind: ClassVar[str] = "sensor"

    def __init__(self, config: SensorEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        widths = [2 * config.channels] + [config.hidden] * (len(config.strides) - 1)
        self.stages = nn.ModuleList(
            _Stage(width, config.hidden, stride) for width, stride in zip(widths, config.strides, strict=True)
        )
        self.projection = nn.Linear(config.hidden, config.out_dim)
        self.norm = nn.LayerNorm(config.out_dim)

    def example_samples(self, n: int, rng: np.random.Generator) -> list[SensorSample]:
        """``n`` series of 1 to 4 windows at 0.5 Hz, with gaps and one fully unobserved window."""
        from encoders.readers.sensor_files import SensorArray

        window, channels = self.config.window, self.config.channels
        samples: list[SensorSample] = []
        for _ in range(n):
            length = int(rng.integers(window, 4 * window + 1))
            observed = rng.random((length, channels)) < 0.5
            observed[0, 0] = True
            if length > 2 * window:
                observed[window : 2 * window] = False
            values = np.where(observed, rng.standard_normal((length, channels)), 0.0)
            samples.append(
                SensorArray(
                    values=values.astype(np.float32),
                    observed=observed,
                    channels=tuple(f"ch{c}" for c in range(channels)),
                    rate_hz=0.5,
                    start_s=float(rng.integers(0, 100)),
                )
            )
        return samples

    def collate(self, samples: Sequence[SensorSample | None]) -> EncoderBatch:
        """Pad every series, unobserved, to the same whole number of windows.

        Args:
            samples: per patient, a :class:`~encoders.readers.sensor_files.SensorArray` with ``values``
                and ``observed`` of shape (T_i, C), or None (a fully unobserved placeholder).

        Returns:
            tensors ``values`` (B, L, C) float32 and ``observed`` (B, L, C) bool, L = the longest
            T_i rounded up to a multiple of the window. Names: per patient ``L / W`` windows in
            seconds from its ``start_s``; ``"window i"`` for a missing patient.

        Raises:
            ValueError: a series of the wrong shape, or a non-finite observed value.
        """
        window, channels = self.config.window, self.config.channels
        series = [
            None if sample is None else _series(sample, row, channels) for row, sample in enumerate(samples)
        ]
        longest = max((pair[0].shape[0] for pair in series if pair is not None), default=1)
        count = max(1, math.ceil(longest / window))
        values = torch.zeros(len(samples), count * window, channels)
        observed = torch.zeros(len(samples), count * window, channels, dtype=torch.bool)
        names = []
        for row, (sample, pair) in enumerate(zip(samples, series, strict=True)):
            if sample is None or pair is None:
                names.append([f"window {i}" for i in range(count)])
                continue
            length = pair[0].shape[0]
            values[row, :length], observed[row, :length] = pair
            span = window / float(sample.rate_hz)
            start = float(sample.start_s)
            names.append(
                [f"t={_seconds(start + i * span)}-{_seconds(start + (i + 1) * span)}s" for i in range(count)]
            )
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        return EncoderBatch(tensors={"values": values, "observed": observed}, present=present, names=names)

    def sample_summary(self, sample: SensorSample) -> dict[str, float]:
        """Amplitude spread and beat intervals of each channel
        (:func:`encoders.summaries.waveform_summary`)."""
        values, observed = (np.asarray(a) for a in (sample.values, sample.observed))
        names = [f"ch{c}" for c in range(values.shape[1])]
        return waveform_summary(values, observed, names, float(sample.rate_hz))

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, L / W, D); ``mask`` True for windows with an observation."""
        observed = batch.tensors["observed"]  # (B, L, C)
        x = torch.cat([batch.tensors["values"], observed.float()], dim=2).transpose(1, 2)
        seen = observed.any(dim=2, keepdim=True).float().transpose(1, 2)  # (B, 1, L)
        for stage in self.stages:
            x, seen = stage(x, seen)
        values = self.norm(self.projection(x.transpose(1, 2)))
        mask = seen[:, 0].bool() & batch.present[:, None]
        return Tokens(values=values, mask=mask, names=batch.names)


def _series(sample: SensorSample, row: int, channels: int) -> tuple[Tensor, Tensor]:
    """(T, C) values (0 where unobserved) and (T, C) observed of one sample, checked."""
    values = torch.as_tensor(np.asarray(sample.values), dtype=torch.float32)
    observed = torch.as_tensor(np.asarray(sample.observed), dtype=torch.bool)
    if values.dim() != 2 or values.shape[1] != channels or observed.shape != values.shape:
        raise ValueError(
            f"sensor sample {row}: expected values and observed of shape (T, {channels}), got "
            f"{tuple(values.shape)} and {tuple(observed.shape)}"
        )
    if not torch.isfinite(values[observed]).all():
        raise ValueError(f"sensor sample {row}: an observed value is not finite")
    return values.masked_fill(~observed, 0.0), observed


def _seconds(value: float) -> str:
    """``3600`` or ``1.25``: seconds without trailing zeros, to the millisecond."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


TOKEN_MODES = ("windows", "variables")
_TINY = SensorEncoderConfig(channels=3, out_dim=13, hidden=11, strides=(2, 3))
_TINY_VARIABLES = SensorVariableConfig(channels=3, out_dim=13, bins=5)


@register_encoder("sensor")
def sensor(**config: Any) -> SensorEncoder | SensorVariableEncoder:
    """The sensor encoder; ``channels`` comes from the cohort spec. ``tokens="windows"`` (the
    default) gives time-window tokens from a temporal CNN (waveforms), ``tokens="variables"``
    per-variable statistic tokens (measurement series)."""
    tokens = config.get("tokens", "windows")
    if tokens == "variables":
        return SensorVariableEncoder(SensorVariableConfig(**config))
    if tokens != "windows":
        raise ValueError(f"sensor encoder tokens must be one of {TOKEN_MODES}, got {tokens!r}")
    return SensorEncoder(SensorEncoderConfig(**config))


@register_encoder("sensor-tiny")
def sensor_tiny(**config: Any) -> SensorEncoder | SensorVariableEncoder:
    """A tiny sensor encoder with odd sizes, for tests."""
    if config.get("tokens") == "variables":
        return SensorVariableEncoder(replace(_TINY_VARIABLES, **config))
    return SensorEncoder(replace(_TINY, **config))
