"""The speed benchmark's measuring helpers (the benchmark itself runs in `make bench-quick`)."""

from __future__ import annotations

import cProfile
import json
import math
import pstats

import pytest
import torch
from torch import nn

from benchmarks.speed import (
    complete_patients,
    count_flops,
    cumulative_seconds,
    matmul_rate,
    prediction_time_shares,
    row,
)
from benchmarks.suite import validate_row


def test_matmul_rate_is_a_positive_gflops_figure_per_repeat():
    rates = matmul_rate("cpu", size=96, repeats=3)
    assert len(rates) == 3
    assert all(math.isfinite(r) and r > 0 for r in rates)


def test_flops_of_a_linear_layer_are_two_times_batch_in_out():
    layer = nn.Linear(5, 7)
    output, flops = count_flops(layer, torch.randn(3, 5))
    assert output.shape == (3, 7)
    assert flops == 2 * 3 * 5 * 7


def _inner(n: int) -> int:
    return sum(i * i for i in range(n))


def _outer() -> int:
    return _inner(20_000) + _inner(20_000)


def _never() -> None:
    pass


def test_cumulative_seconds_reads_a_real_profile():
    profiler = cProfile.Profile()
    profiler.runcall(_outer)
    stats = pstats.Stats(profiler)
    inner, outer = cumulative_seconds(stats, _inner), cumulative_seconds(stats, _outer)
    assert 0 < inner <= outer
    assert cumulative_seconds(stats, _never) == 0.0


def test_time_shares_refuse_a_profile_without_a_prediction():
    profiler = cProfile.Profile()
    profiler.runcall(_outer)
    with pytest.raises(ValueError, match="no predict_cohort call"):
        prediction_time_shares(pstats.Stats(profiler))


def test_rows_follow_the_suite_schema():
    several = validate_row(row("m", "seconds", [1.0, 3.0], anchor=2.0))
    assert (several["mean"], several["n"], several["anchor"]) == (2.0, 2, 2.0)
    assert several["sd"] == pytest.approx(math.sqrt(2))
    one = validate_row(row("m", "seconds per epoch", 4.0, n=5))
    assert (one["mean"], one["sd"], one["n"]) == (4.0, None, 5)


def test_complete_patients_are_those_missing_nothing(tmp_path):
    patients = [{"patient_id": f"P{i}", "missing": [] if i % 2 else ["notes"]} for i in range(7)]
    (tmp_path / "ground_truth.json").write_text(json.dumps({"patients": patients}))
    assert complete_patients(tmp_path, 2) == ["P1", "P3"]
    with pytest.raises(ValueError, match="3 patients have every modality, 4 needed"):
        complete_patients(tmp_path, 4)
