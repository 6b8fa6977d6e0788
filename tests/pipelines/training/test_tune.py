"""``deepwe tune``: trials on the validation split, never the test split; best settings as YAML."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from pipelines.cohorts.cohort_table import load_cohort
from pipelines.training.train_config import TrainConfig
from pipelines.training.tune import SEARCH_SPACE, parse_duration, suggest, tune, without_test_rows
from tests.pipelines.conftest import TINY


def test_durations_read_like_a_person_writes_them():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("45") == 45
    with pytest.raises(ValueError, match="30m"):
        parse_duration("half an hour")


def test_trials_draw_exactly_the_documented_settings_within_their_ranges():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        config = suggest(trial, TrainConfig())
        assert set(trial.params) == set(SEARCH_SPACE)
        assert 1e-3 <= config.fusion["lambda_sparsity"] <= 0.05
        assert 0 <= config.fusion["lambda_contrastive"] <= 0.3 and 0 <= config.fusion["dropout"] <= 0.3
        assert 0 <= config.fusion["lambda_teacher"] <= 10
        assert 3e-4 <= config.lr <= 3e-3 and config.ensemble == 1
        assert config.fusion["hidden_dim"] % config.fusion["n_heads"] == 0


def test_tuning_sees_no_test_row(cohort_60):
    cohort = load_cohort(cohort_60)
    kept = without_test_rows(cohort)
    assert {r.split for r in kept.records()} == {"train", "val"}
    assert len(kept.table) == sum(r.split != "test" for r in cohort.records())


@pytest.mark.slow
def test_trials_write_a_table_and_a_best_config_that_train_accepts(cohort_60, tmp_path):
    seen = []
    result = tune(
        cohort_60, tmp_path / "tune", replace(TINY, epochs=1), trials=2, device="cpu", on_trial=seen.append
    )
    table = pd.read_csv(result.trials_table)
    assert len(table) == 2 == result.trials == len(seen)
    assert (table["test_patients_seen"] == 0).all()
    assert {"lr", "token_dim", "fusion.hidden_dim", "val_auroc", "val_log_loss"} <= set(table.columns)
    best = TrainConfig.from_yaml(result.best_config)
    chosen = table[table["lr"].round(12) == round(best.lr, 12)]
    assert len(chosen) == 1 and chosen.iloc[0]["val_auroc"] == table["val_auroc"].max()
    assert best.epochs == 1 and best.fusion["hidden_dim"] == chosen.iloc[0]["fusion.hidden_dim"]
    assert not list((tmp_path / "tune").glob("trials-*")), "trial bundles are removed"
