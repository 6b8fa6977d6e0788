"""Audio encoder: log-mel spectrogram, a small 2-D CNN, one token per stretch of time.

Each CNN block halves frequency and time, so with ``k`` blocks token ``i`` covers the
``2**k * hop_length`` samples from ``i * 2**k * hop_length``; its name gives that span in seconds
(``"t=1.20-1.40s"``). A token whose span is digital silence (all samples exactly 0, as the reader's
padding is) is masked out: nothing was recorded there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from encoders._registry import register_encoder
from encoders.base import ModalityEncoder
from encoders.summaries import audio_summary
from encoders.tokens import EncoderBatch, Tokens

# Floor of the mel power before the log: silence stays finite (about -14) instead of -inf.
_LOG_FLOOR = 1e-6


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Settings of :class:`AudioEncoder`.

    Attributes:
        out_dim: token width D.
        sample_rate: Hz of the waveforms (the cohort spec's ``sample_rate``).
        duration_s: waveforms are cropped or zero-padded to this many seconds.
        n_fft: STFT window in samples.
        hop_length: STFT hop in samples.
        n_mels: mel bands.
        channels: output channels of the CNN blocks; each block halves frequency and time.
    """

    out_dim: int = 128
    sample_rate: int = 4000
    duration_s: float = 10.0
    n_fft: int = 256
    hop_length: int = 50
    n_mels: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"audio encoder channels must be positive, got {self.channels}")
        if not 0 < self.hop_length <= self.n_fft:
            raise ValueError(
                f"audio encoder needs 0 < hop_length <= n_fft, got {self.hop_length} and {self.n_fft}"
            )
        if not 1 <= self.n_mels <= self.n_fft // 2 + 1:
            raise ValueError(
                f"audio encoder n_mels must be in 1..n_fft // 2 + 1 = {self.n_fft // 2 + 1}, "
                f"got {self.n_mels}"
            )
        if self.num_samples < self.n_fft or self.out_dim < 1:
            raise ValueError(
                f"audio encoder needs duration_s * sample_rate >= n_fft ({self.n_fft}) and "
                f"out_dim >= 1, got {self.num_samples} samples and out_dim {self.out_dim}"
            )

    @property
    def num_samples(self) -> int:
        """N, the fixed waveform length."""
        return round(self.duration_s * self.sample_rate)

    @property
    def token_span(self) -> int:
        """Samples per token: the hop times the CNN's time downsampling."""
        return self.hop_length * 2 ** len(self.channels)

    @property
    def num_tokens(self) -> int:
        """T, tokens per waveform: spans of ``token_span`` samples that start inside it."""
        return math.ceil(self.num_samples / self.token_span)


class AudioEncoder(ModalityEncoder):
    """Frame tokens from a log-mel CNN.

    Args:
        config: spectrogram, CNN and token width settings.
    """

    kind: ClassVar[str] = "audio"

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
        )
        blocks: list[nn.Module] = []
        width = 1
        for channels in config.channels:
            blocks += [
                nn.Conv2d(width, channels, kernel_size=3, stride=2, padding=1),
                # One group: per-recording normalisation, independent of the other patients.
                nn.GroupNorm(1, channels),
                nn.GELU(),
            ]
            width = channels
        self.cnn = nn.Sequential(*blocks)
        self.projection = nn.Linear(width, config.out_dim)
        self.position = nn.Parameter(torch.randn(config.num_tokens, config.out_dim) * 0.02)
        self.norm = nn.LayerNorm(config.out_dim)
        span, rate = config.token_span, config.sample_rate
        self.token_names = [
            f"t={i * span / rate:.2f}-{min((i + 1) * span, config.num_samples) / rate:.2f}s"
            for i in range(config.num_tokens)
        ]

    def example_samples(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` noisy tones, some shorter and some longer than ``duration_s``."""
        length, rate = self.config.num_samples, self.config.sample_rate
        samples = []
        for _ in range(n):
            time = np.arange(rng.integers(length // 2, length + length // 4)) / rate
            tone = 0.5 * np.sin(2 * np.pi * rng.uniform(20, rate / 4) * time)
            samples.append((tone + 0.05 * rng.standard_normal(time.size)).astype(np.float32))
        return samples

    def collate(self, samples: Sequence[np.ndarray | Tensor | None]) -> EncoderBatch:
        """Crop or zero-pad every waveform to ``num_samples``; ``None`` becomes silence.

        Args:
            samples: per patient, a float32 mono ``(N,)`` waveform at ``sample_rate``, or None.

        Returns:
            tensors ``waveform`` (B, num_samples).

        Raises:
            ValueError: a waveform that is not 1-D or has non-finite samples.
        """
        length = self.config.num_samples
        waves = torch.zeros(len(samples), length)
        for row, sample in enumerate(samples):
            if sample is None:
                continue
            wave = torch.as_tensor(np.asarray(sample), dtype=torch.float32)
            if wave.dim() != 1:
                raise ValueError(
                    f"audio sample {row}: expected a mono (N,) waveform, got shape {tuple(wave.shape)}"
                )
            if not torch.isfinite(wave).all():
                raise ValueError(f"audio sample {row}: has non-finite samples")
            kept = wave[:length]
            waves[row, : kept.numel()] = kept
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        return EncoderBatch(
            tensors={"waveform": waves},
            present=present,
            names=[list(self.token_names) for _ in samples],
        )

    def sample_summary(self, sample: np.ndarray | Tensor) -> dict[str, float]:
        """Loudness and band powers (:func:`encoders.summaries.audio_summary`)."""
        return audio_summary(np.asarray(sample, dtype=np.float32), self.config.sample_rate)

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, T, D); ``mask`` True for present patients' non-silent spans."""
        waves = batch.tensors["waveform"]  # (B, N)
        spectrum = torch.log(self.mel(waves) + _LOG_FLOOR)  # (B, n_mels, frames)
        features = self.cnn(spectrum[:, None]).mean(dim=2)  # (B, C, T'): pooled over frequency
        # The centred STFT adds a frame at the end, so T' may exceed T by one span of padding.
        features = features[..., : self.config.num_tokens]
        values = self.norm(self.projection(features.transpose(1, 2)) + self.position)
        mask = self._sounding(waves) & batch.present[:, None]
        return Tokens(values=values, mask=mask, names=batch.names)

    def _sounding(self, waves: Tensor) -> Tensor:
        """(B, T) bool: True where a token's span holds any non-zero sample."""
        span, count = self.config.token_span, self.config.num_tokens
        padded = F.pad(waves, (0, span * count - waves.shape[1]))
        return (padded.view(waves.shape[0], count, span) != 0).any(dim=-1)


_TINY = AudioEncoderConfig(
    out_dim=13, sample_rate=1000, duration_s=0.5, n_fft=64, hop_length=25, n_mels=11, channels=(5, 7)
)


@register_encoder("audio")
def audio(**config: Any) -> AudioEncoder:
    """The audio encoder (10 s at 4 kHz, 0.2 s tokens, by default)."""
    return AudioEncoder(AudioEncoderConfig(**config))


@register_encoder("audio-tiny")
def audio_tiny(**config: Any) -> AudioEncoder:
    """A tiny audio encoder with odd sizes, for tests."""
    return AudioEncoder(replace(_TINY, **config))
