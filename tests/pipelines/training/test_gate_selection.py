"""Selection epochs train the feature gates, and nothing else, against the frozen predictor."""

from __future__ import annotations

import dataclasses

import pytest
from safetensors.torch import load_file

from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig
from tests.pipelines.conftest import TINY

GATE_PARTS = (".score.", ".position_offset", "core.context.")
# Calibration folds its positive-logit shift into the output layer's bias.
CALIBRATED = "core.head.1.bias"


def test_selection_epochs_change_the_gates_and_nothing_else(cohort_60, tmp_path):
    fitted = train(cohort_60, tmp_path / "fitted", TINY, device="cpu", progress=False)
    # A tolerance this wide keeps the last selection epoch whatever it costs.
    config = dataclasses.replace(TINY, selection_epochs=2, selection_sparsity=0.5, selection_tolerance=10.0)
    selected = train(cohort_60, tmp_path / "selected", config, device="cpu", progress=False)

    before = load_file(str(tmp_path / "fitted" / "weights.safetensors"))
    after = load_file(str(tmp_path / "selected" / "weights.safetensors"))
    assert before.keys() == after.keys()
    gates = [name for name in before if any(part in name for part in GATE_PARTS)]
    assert gates and any(name.endswith("baseline") for name in before)
    for name in before:
        if name in gates or name == CALIBRATED:
            continue
        assert before[name].equal(after[name]), f"{name} changed in the selection epochs"
    assert any(not before[name].equal(after[name]) for name in gates)

    history = selected.metrics["selection"]["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert selected.metrics["selection"]["kept_epoch"] > 0
    assert "selection" not in fitted.metrics
    assert history[-1]["mean_weight"] < history[0]["mean_weight"]
    assert "Feature selection: 2 epochs trained the feature gates alone" in (
        tmp_path / "selected" / "model_card.md"
    ).read_text(encoding="utf-8")


def test_a_selection_that_costs_validation_log_loss_is_undone(cohort_60, tmp_path):
    train(cohort_60, tmp_path / "fitted", TINY, device="cpu", progress=False)
    # A sparsity weight this strong shuts nearly every gate; a tolerance of 0 keeps a selection
    # epoch only if it did not raise the validation log-loss.
    config = dataclasses.replace(TINY, selection_epochs=2, selection_sparsity=50.0, selection_tolerance=0.0)
    selected = train(cohort_60, tmp_path / "selected", config, device="cpu", progress=False)
    history = selected.metrics["selection"]["epochs"]
    before = load_file(str(tmp_path / "fitted" / "weights.safetensors"))
    after = load_file(str(tmp_path / "selected" / "weights.safetensors"))
    gates_kept = all(before[name].equal(after[name]) for name in before if name != CALIBRATED)
    assert gates_kept == all(row["val_log_loss"] > history[0]["val_log_loss"] for row in history[1:])
    assert gates_kept == (selected.metrics["selection"]["kept_epoch"] == 0)


@pytest.mark.parametrize(
    ("key", "value"), [("selection_epochs", -1), ("selection_sparsity", -0.1), ("selection_tolerance", -1.0)]
)
def test_negative_selection_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**{key: value})


def test_each_ensemble_member_selects_on_its_own_and_a_model_without_gates_skips_it(cohort_60, tmp_path):
    config = dataclasses.replace(TINY, ensemble=2, selection_epochs=1, selection_tolerance=10.0)
    ensemble = train(cohort_60, tmp_path / "ensemble", config, device="cpu", progress=False)
    assert [len(m["selection"]["epochs"]) for m in ensemble.metrics["members"]] == [2, 2]
    gateless = dataclasses.replace(
        TINY, selection_epochs=1, fusion={**TINY.fusion, "use_feature_gates": False}
    )
    result = train(cohort_60, tmp_path / "gateless", gateless, device="cpu", progress=False)
    assert "selection" not in result.metrics
