"""Trajectory tokens: each channel reads its own measurements at their own times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import create_encoder
from encoders.sensor_trajectory import ChannelTrajectories
from encoders.sensor_variables import (
    SERIES_STATISTICS,
    SeriesObservations,
    SeriesStatistics,
    series_statistics,
)
from tests.encoders.test_sensor_variables import three_hour_series


def _measurements(seed: int, batch: int = 3, length: int = 11, channels: int = 4):
    g = torch.Generator().manual_seed(seed)
    hours = torch.rand(batch, length, generator=g) * 48
    channel = torch.randint(0, channels, (batch, length), generator=g)
    codes = torch.rand(batch, length, 5, generator=g)
    mask = torch.rand(batch, length, generator=g) < 0.8
    return hours, channel, codes, mask


def _read(reader: ChannelTrajectories, hours, channel, codes, mask):
    """``reader`` on the real (masked-in) measurements of padded (B, N) inputs."""
    row, position = mask.nonzero(as_tuple=True)
    return reader(hours[row, position], channel[row, position], codes[row, position], row, mask.shape[0])


def test_measurements_are_kept_oldest_first_with_hours_before_the_end() -> None:
    kept = series_statistics(three_hour_series(), keep_observations=True).observations
    assert kept is not None
    np.testing.assert_allclose(kept.hours_before_end, [2.5, 1.5, 0.5])  # cell centres, end at 3 h
    assert kept.channel.tolist() == [0, 1, 0] and kept.value.tolist() == [80.0, 2.5, 100.0]
    assert series_statistics(three_hour_series()).observations is None  # only kept when asked for


def test_a_channel_reads_only_its_own_measurements_in_any_order() -> None:
    torch.manual_seed(0)
    reader = ChannelTrajectories(channels=4, bins=5, dim=12, heads=3).eval()
    hours, channel, codes, mask = _measurements(1)
    with torch.no_grad():
        tokens, measured = _read(reader, hours, channel, codes, mask)
        order = torch.randperm(hours.shape[1])
        shuffled, _ = _read(reader, hours[:, order], channel[:, order], codes[:, order], mask[:, order])
        # Change every measurement of channel 0: the other channels' tokens stay as they were.
        changed_codes = torch.where((channel == 0).unsqueeze(-1), 1 - codes, codes)
        changed, _ = _read(reader, hours, channel, changed_codes, mask)
    torch.testing.assert_close(tokens, shuffled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(changed[:, 1:], tokens[:, 1:])
    has_zero = measured[:, 0]
    assert has_zero.any() and not torch.allclose(changed[has_zero, 0], tokens[has_zero, 0])
    expected = torch.zeros(3, 4, dtype=torch.bool)
    for b in range(3):
        expected[b, channel[b][mask[b]].unique()] = True
    assert torch.equal(measured, expected)
    assert (tokens[~measured] == 0).all()


def test_trajectory_tokens_are_named_grouped_and_masked_by_channel() -> None:
    encoder = create_encoder(
        "sensor", tokens="variables", trajectory=True, channels=3, names=["HR", "Lactate", "SpO2"], out_dim=8
    ).eval()
    stats = len(SERIES_STATISTICS)
    names = encoder.token_names
    assert names[3 * stats : 3 * stats + 3] == [
        "HR (trajectory)",
        "Lactate (trajectory)",
        "SpO2 (trajectory)",
    ]
    assert encoder.token_groups[3 * stats : 3 * stats + 3] == (0, 1, 2)
    with torch.no_grad():
        tokens = encoder(encoder.collate([three_hour_series(), None]))
    assert tokens.values.shape == (2, 3 * stats + 4, 8)
    assert tokens.mask[0, 3 * stats : 3 * stats + 3].tolist() == [True, True, False]  # SpO2 never measured
    assert not tokens.mask[1].any()


def test_only_the_most_recent_measurements_are_read_and_statistics_without_them_are_refused() -> None:
    encoder = create_encoder("sensor-tiny", tokens="variables", trajectory=True, max_observations=2)
    many = SeriesStatistics(
        np.zeros((3, len(SERIES_STATISTICS)), np.float32),
        np.ones((3, len(SERIES_STATISTICS)), bool),
        observations=SeriesObservations(
            np.array([5.0, 3.0, 1.0], np.float32), np.array([0, 1, 2]), np.array([7.0, 8.0, 9.0], np.float32)
        ),
    )
    batch = encoder.collate([many])
    assert batch.tensors["reading"].tolist() == [[8.0, 9.0]]
    assert batch.tensors["hours"].tolist() == [[3.0, 1.0]]
    with pytest.raises(ValueError, match="trajectory tokens need its measurements"):
        encoder.collate([series_statistics(three_hour_series())])
