"""Time-aware trajectory tokens: a learned, continuous-time reading of each channel's measurements.

Every measurement is a (time, variable, value) triplet, embedded as in STraTS (Tipirneni & Reddy,
"Self-Supervised Transformer for Sparse and Irregularly Sampled Multivariate Clinical Time-Series",
ACM TKDD 2022): a continuous-value embedding of its time (here hours before the end of the series),
an embedding of its value (piecewise-linear over the channel's training quantiles) and one of its
variable. Each channel then reads its own measurements with multi-head attention from learned
queries, so one head can learn "the most recent value", another "the worst value of the last hours"
or a trend, at the measurements' own times, without an hourly grid. The result is one token per
channel, ``"Lactate (trajectory)"``, that the fusion core weighs like any other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_SCALE_HOURS = 24.0
TIME_EMBEDDING_WIDTH = 16


class ChannelTrajectories(nn.Module):
    """(time, channel, value) measurements -> one token per channel.

    Attention runs within a channel only, as a softmax over that channel's measurements, computed
    with scatter operations in O(M · D) over the batch's M real measurements (no padding), so
    hundreds of measurements per patient cost little and a patient's tokens do not depend on its
    batch mates.

    Args:
        channels: C.
        bins: K, the width of the value codes.
        dim: D, the token width.
        heads: the attention heads per channel wanted; H is the most up to this that divide D.
    """

    def __init__(self, channels: int, bins: int, dim: int, heads: int) -> None:
        super().__init__()
        heads = next(h for h in range(max(1, min(heads, dim)), 0, -1) if dim % h == 0)
        self.channels, self.heads = channels, heads
        self.value = nn.Linear(bins, dim)
        self.time = nn.Sequential(
            nn.Linear(1, TIME_EMBEDDING_WIDTH), nn.Tanh(), nn.Linear(TIME_EMBEDDING_WIDTH, dim)
        )
        self.variable = nn.Embedding(channels, dim)
        self.queries = nn.Parameter(torch.randn(channels, heads, dim // heads) * 0.02)
        self.keys = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, hours: Tensor, channel: Tensor, codes: Tensor, row: Tensor, batch: int
    ) -> tuple[Tensor, Tensor]:
        """Read each channel's measurements, given as one flat list for the whole batch (no
        padding, so the cost follows the number of real measurements, not the longest patient).

        Args:
            hours: (M,) hours before the end of the series.
            channel: (M,) long channel index of each measurement.
            codes: (M, K) value codes in [0, 1].
            row: (M,) long patient of each measurement, in [0, B).
            batch: B.

        Returns:
            (B, C, D) trajectory tokens (0 for a channel without measurements) and (B, C) bool, True
            where the channel has a measurement.
        """
        heads, width = self.heads, self.queries.shape[-1]
        embedded = (
            self.value(codes) + self.time((hours / TIME_SCALE_HOURS).unsqueeze(-1)) + self.variable(channel)
        )  # (M, D)
        keys = self.keys(embedded).view(-1, heads, width)
        values = self.values(embedded).view(-1, heads, width)
        scores = (self.queries[channel] * keys).sum(-1) / math.sqrt(width)  # (M, H)
        # One softmax group per (patient, channel).
        groups = batch * self.channels
        group = row * self.channels + channel
        with torch.no_grad():
            top = scores.new_full((groups, heads), -torch.inf).scatter_reduce(
                0, group.unsqueeze(1).expand(-1, heads), scores, "amax"
            )
        weights = torch.exp(scores - top[group])
        total = scores.new_zeros(groups, heads).index_add(0, group, weights)
        read = scores.new_zeros(groups, heads, width).index_add(0, group, weights.unsqueeze(-1) * values)
        read = read / total.clamp_min(1e-12).unsqueeze(-1)
        measured = (total[:, 0] > 0).reshape(batch, self.channels)
        tokens = self.out(read.reshape(batch, self.channels, heads * width))
        return torch.where(measured.unsqueeze(-1), tokens, torch.zeros_like(tokens)), measured
