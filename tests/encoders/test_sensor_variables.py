"""Per-variable sensor statistics and the piecewise-linear numerical embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import create_encoder
from encoders.numeric_embedding import PiecewiseLinearEmbedding, implausible_counts, quantile_edges
from encoders.readers.sensor_files import SensorArray
from encoders.sensor_variables import SERIES_STATISTICS, series_statistics

STAT = {name: i for i, name in enumerate(SERIES_STATISTICS)}


def three_hour_series() -> SensorArray:
    """Three hours on a one-hour grid: HR at hours 0 and 2, lactate at hour 1, SpO2 never."""
    values = np.zeros((3, 3), dtype=np.float32)
    observed = np.zeros((3, 3), dtype=bool)
    values[[0, 2], 0], observed[[0, 2], 0] = [80.0, 100.0], True
    values[1, 1], observed[1, 1] = 2.5, True
    return SensorArray(values, observed, ("HR", "Lactate", "SpO2"), 1 / 3600, 0.0)


def test_statistics_of_a_channel_follow_its_measurements() -> None:
    stats = series_statistics(three_hour_series())
    hr = stats.values[0]
    assert hr[STAT["first"]] == 80 and hr[STAT["last"]] == 100
    assert hr[STAT["min"]] == 80 and hr[STAT["max"]] == 100 and hr[STAT["mean"]] == 90
    assert hr[STAT["count"]] == 2
    assert hr[STAT["hours since last"]] == pytest.approx(0.5)  # last cell centre 2.5 h, end 3 h
    assert hr[STAT["slope"]] == pytest.approx(10.0)  # +20 over two hours
    assert stats.observed[0].all()


def test_a_single_measurement_has_no_slope_and_an_unmeasured_channel_is_masked_not_zero() -> None:
    stats = series_statistics(three_hour_series())
    lactate = stats.observed[1]
    assert not lactate[STAT["slope"]] and lactate[[STAT[s] for s in SERIES_STATISTICS if s != "slope"]].all()
    assert stats.values[1, STAT["last"]] == 2.5
    assert not stats.observed[2].any()  # SpO2: every statistic masked


def test_unmeasured_statistics_are_masked_tokens_and_named_clinically() -> None:
    encoder = create_encoder(
        "sensor", tokens="variables", channels=3, names=["HR", "Lactate", "SpO2"], out_dim=8
    ).eval()
    batch = encoder.collate([three_hour_series(), None])
    tokens = encoder(batch)
    names = tokens.names[0]
    assert (
        names[STAT["last"]] == "HR (last)"
        and names[len(SERIES_STATISTICS) + STAT["slope"]] == "Lactate (slope)"
    )
    assert names[-1] == "measured channels"
    spo2 = slice(2 * len(SERIES_STATISTICS), 3 * len(SERIES_STATISTICS))
    assert not tokens.mask[0, spo2].any() and tokens.mask[0, -1]
    assert not tokens.mask[1].any()
    assert encoder.token_groups[: len(SERIES_STATISTICS)] == (0,) * len(SERIES_STATISTICS)


def test_scalar_features_are_every_statistic_channel_major_with_nan_where_unmeasured() -> None:
    encoder = create_encoder("sensor", tokens="variables", channels=3, names=["HR", "Lactate", "SpO2"])
    features = encoder.scalar_features(encoder.collate([three_hour_series(), None])).numpy()
    stats = series_statistics(three_hour_series())
    assert features.shape == (2, 3 * len(SERIES_STATISTICS))
    expected = np.where(stats.observed, stats.values, np.nan).reshape(-1)
    np.testing.assert_array_equal(features[0], expected)
    assert features[0, STAT["last"]] == 100 and np.isnan(features[0, len(SERIES_STATISTICS) + STAT["slope"]])
    assert np.isnan(features[1]).all()


def test_quantile_edges_come_from_observed_values_only_and_clip_the_extremes() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(7.4, 0.05, (1000, 2))
    values[:500, 1] = np.nan
    values[0, 0] = 735.0  # a unit error
    edges = quantile_edges(values, bins=8)
    assert edges.shape == (2, 9) and (np.diff(edges, axis=1) >= 0).all()
    assert edges[0, -1] < 8  # the 99.5% quantile, not the unit error
    embedding = PiecewiseLinearEmbedding(2, 8, 4)
    embedding.set_edges(edges)
    x = torch.tensor([[735.0, 7.4], [float(edges[0, -1]), 7.4]])
    codes = embedding.encode(x)
    assert torch.equal(codes[0, 0], codes[1, 0])  # clipped at the top edge
    assert torch.equal(codes[0, 0], torch.ones(8))
    assert implausible_counts(values)[0] == 1


def test_edges_must_fit_and_be_sorted() -> None:
    embedding = PiecewiseLinearEmbedding(2, 4, 3)
    with pytest.raises(ValueError, match="shape"):
        embedding.set_edges(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-decreasing"):
        embedding.set_edges(np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], dtype=np.float32))


def test_embedding_is_the_bin_weighted_sum_and_ignores_batch_mates() -> None:
    torch.manual_seed(0)
    embedding = PiecewiseLinearEmbedding(5, 6, 7, bias_std=1.0)
    x = torch.randn(33, 5) * 2
    tokens = embedding(x)
    expected = torch.einsum("bfk,fkd->bfd", embedding.encode(x), embedding.weight) + embedding.bias
    assert tokens.shape == (33, 5, 7)
    torch.testing.assert_close(tokens, expected)
    assert torch.equal(embedding(x[4:5]), tokens[4:5])
    tokens.sum().backward()
    assert embedding.weight.grad is not None and embedding.bias.grad is not None
