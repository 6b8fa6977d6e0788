"""PhysioNet 2012 CV part: rows, anchors, the verdict and the ablation configs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.baselines import GB, p12_cohort
from benchmarks.quality_p12 import (
    ABLATION_NAMES,
    DEEPWE,
    ENCODER_ABLATIONS,
    NO_TRAJECTORIES,
    SERIES_AS_WINDOWS,
    TUNED,
    Settings,
    main,
    summary_rows,
    verdict,
)
from benchmarks.suite import validate_row
from deepwe_mm.config import ABLATIONS
from pipelines.training.train_config import TrainConfig


def _fold(deepwe: float, gb: float, ablation: float) -> dict[str, dict[str, float]]:
    metrics = {"auprc": 0.3, "brier": 0.1, "ece": 0.05, "train_seconds": 2.0}
    return {
        GB: metrics | {"auroc": gb},
        DEEPWE: metrics | {"auroc": deepwe},
        ABLATION_NAMES["no_graph"]: metrics | {"auroc": ablation},
    }


def test_rows_average_the_folds_and_anchor_deepwe_on_gb_and_ablations_on_deepwe():
    rows = summary_rows([_fold(0.80, 0.84, 0.78), _fold(0.82, 0.86, 0.76), _fold(0.78, 0.85, 0.80)], folds=3)
    for row in rows:
        validate_row(row)
    by = {(r["method"], r["metric"]): r for r in rows}
    deepwe = by[(DEEPWE, "test AUROC")]
    assert deepwe["benchmark"] == "PhysioNet 2012 in-hospital death, 3-fold CV"
    assert deepwe["mean"] == pytest.approx(0.80)
    assert deepwe["sd"] == pytest.approx(np.std([0.80, 0.82, 0.78], ddof=1))
    assert deepwe["n"] == 3
    assert deepwe["anchor"] == pytest.approx(0.85)  # gradient boosting, same folds
    assert by[(ABLATION_NAMES["no_graph"], "test AUROC")]["anchor"] == pytest.approx(0.80)
    assert by[(GB, "test AUROC")]["anchor"] is None
    assert by[(DEEPWE, "training seconds")]["anchor"] is None
    difference = by[(f"{DEEPWE} - {GB}", "test AUROC difference, same fold")]
    assert difference["mean"] == pytest.approx(-0.05)
    assert difference["anchor"] == 0.0


def test_the_verdict_says_plainly_whether_deepwe_beats_gradient_boosting():
    loses = summary_rows([_fold(0.80, 0.84, 0.8), _fold(0.81, 0.86, 0.8), _fold(0.79, 0.85, 0.8)], folds=3)
    assert verdict(loses).startswith(f"{DEEPWE} loses to gradient boosting on summary features: test AUROC")
    beats = summary_rows([_fold(0.90, 0.84, 0.8), _fold(0.91, 0.86, 0.8), _fold(0.89, 0.85, 0.8)], folds=3)
    assert verdict(beats).startswith(f"{DEEPWE} beats gradient boosting")
    tied = summary_rows([_fold(0.90, 0.84, 0.8), _fold(0.80, 0.86, 0.8), _fold(0.85, 0.85, 0.8)], folds=3)
    assert "is within one sd of" in verdict(tied)


def test_a_fold_where_a_metric_is_undefined_is_left_out_of_its_mean():
    folds = [_fold(0.8, 0.8, 0.8), _fold(0.7, 0.8, 0.8)]
    folds[1][DEEPWE]["auprc"] = math.nan
    row = next(
        r for r in summary_rows(folds, folds=2) if r["method"] == DEEPWE and r["metric"] == "test AUPRC"
    )
    assert row["n"] == 1 and row["sd"] is None


def test_deepwe_runs_with_the_defaults_and_each_ablation_changes_exactly_one_part():
    settings = Settings()
    full = settings.train_config(Path("cache"))
    assert full == TrainConfig(seed=settings.seed, text_cache="cache")  # what a user gets
    assert set(ABLATION_NAMES) == {*ABLATIONS, *ENCODER_ABLATIONS}
    for name, switch in ABLATIONS.items():
        config = settings.train_config(Path("cache"), name)
        assert config.fusion == full.fusion | switch
        assert (config.encoders, config.token_dim, config.seed) == (full.encoders, full.token_dim, full.seed)
    windows = settings.train_config(Path("cache"), SERIES_AS_WINDOWS)
    assert windows.encoders == {"sensor": {"tokens": "windows"}} and windows.fusion == full.fusion
    statistics_only = settings.train_config(Path("cache"), NO_TRAJECTORIES)
    assert statistics_only.encoders == {"sensor": {"trajectory": False}}
    assert settings.train_config(Path("cache"), ensemble=5).ensemble == 5
    quick = Settings.quick().train_config(Path("cache"))
    assert quick.epochs == 3 and quick.patience <= 3


def test_tuned_settings_come_from_their_yaml_and_their_rows_are_compared_with_boosting(tmp_path: Path):
    best = tmp_path / "best.yaml"
    best.write_text("lr: 0.0005\nfusion: {dropout: 0.25}\n", encoding="utf-8")
    settings = Settings(tuned=best, seed=3)
    tuned = settings.train_config(Path("cache"), ensemble=4, tuned=True)
    assert (tuned.lr, tuned.fusion, tuned.seed, tuned.ensemble) == (0.0005, {"dropout": 0.25}, 3, 4)
    assert settings.train_config(Path("cache")) == TrainConfig(seed=3, text_cache="cache")
    method = TUNED.format(name=best.name)
    folds = [_fold(0.80, 0.84, 0.8) | {method: _fold(0.86, 0, 0)[DEEPWE]} for _ in range(2)]
    by = {(r["method"], r["metric"]): r for r in summary_rows(folds, folds=2)}
    assert by[(method, "test AUROC")]["anchor"] == pytest.approx(0.84)
    assert by[(f"{method} - {GB}", "test AUROC difference, same fold")]["mean"] == pytest.approx(0.02)


def test_absent_data_and_unknown_ablations_are_refused_with_exit_2(tmp_path: Path, capsys):
    with pytest.raises(FileNotFoundError, match="physionet2012"):
        p12_cohort(tmp_path, tmp_path / "work")
    with pytest.raises(SystemExit) as refused:
        main(["--ablations", "no_gates", "--work", str(tmp_path)])
    assert refused.value.code == 2
    assert "no_feature_gates" in capsys.readouterr().err


def test_subset_options_parse_names_and_none():
    from benchmarks.options import subset_of

    parse = subset_of(("a", "b"), none=True)
    assert parse("b, a") == ("b", "a")
    assert parse("none") == ()
    with pytest.raises(argparse.ArgumentTypeError, match="takes some of a, b"):
        parse("a,c")
    with pytest.raises(argparse.ArgumentTypeError):
        subset_of(("a",))("none")
