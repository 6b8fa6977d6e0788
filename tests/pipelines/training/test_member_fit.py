"""Fitting one model: the regularisers' ramps."""

from __future__ import annotations

import pytest

from pipelines.training.member_fit import ramped


def test_regularisers_ramp_linearly_from_zero_to_their_rate():
    assert [ramped(0.3, epoch, 3) for epoch in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3])
    assert ramped(0.3, 0, 0) == 0.3  # no ramp: the full rate from the start
