"""Fitting one model: the regularisers' ramps and the score early stopping reads."""

from __future__ import annotations

import pytest
import torch

from pipelines.training.member_fit import ramped, validation_score
from pipelines.training.scoring import fit_calibration, score, shifted
from pipelines.training.train_config import TrainConfig


def test_regularisers_ramp_linearly_from_zero_to_their_rate():
    assert [ramped(0.3, epoch, 3) for epoch in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3])
    assert ramped(0.3, 0, 0) == 0.3  # no ramp: the full rate from the start


def test_calibrated_stopping_scores_the_epoch_as_calibration_will_leave_it():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(400, generator=generator) < 0.2).long()
    signal = torch.randn(400, generator=generator) + 1.5 * labels
    # Over-confident logits: the right ranking, five times too sharp.
    logits = torch.stack([torch.zeros(400), 5.0 * signal - 4.0], 1)
    raw = validation_score((logits, labels), "log_loss")
    calibrated = validation_score((logits, labels), "calibrated_log_loss")
    temperature, shift = fit_calibration(logits, labels, binary=True)
    assert temperature > 2.0
    assert calibrated["log_loss"] < raw["log_loss"] - 0.1
    assert calibrated["log_loss"] == pytest.approx(
        score(shifted(logits, shift), labels, temperature)["log_loss"]
    )
    assert calibrated["auroc"] == pytest.approx(raw["auroc"])  # a monotone map keeps the ranking


def test_early_stopping_defaults_to_the_calibrated_log_loss_and_refuses_unknown_scores():
    assert TrainConfig().early_stopping == "calibrated_log_loss"
    with pytest.raises(ValueError, match="early_stopping must be one of"):
        TrainConfig(early_stopping="brier")
