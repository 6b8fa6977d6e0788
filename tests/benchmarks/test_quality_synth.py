"""The synthetic-cohort quality part: patterns, late and early fusion, ranking agreement, one tiny run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.quality_synth import (
    BY_SHAPLEY,
    BY_SINGLE,
    BY_WEIGHT,
    DEEPWE,
    EARLY,
    GB,
    LATE,
    SPEARMAN,
    TOP,
    Settings,
    auroc_by_pattern,
    early_fusion_features,
    fit_mlp,
    late_fusion,
    markdown_table,
    mean_over_present,
    missing_counts,
    pattern_name,
    patterns,
    ranking_agreement,
    run,
    scored_patterns,
    single,
)
from benchmarks.suite import validate_row
from pipelines.evaluation.metrics import auroc
from pipelines.sources.synth import SIGNAL_WEIGHTS

TRUTH = dict(SIGNAL_WEIGHTS)  # labs 1.5, notes 1.35, cxr = vitals 1.2, pcg = ecg 0.9


def test_pattern_names_list_the_absent_modalities_in_order():
    assert pattern_name({"labs": True, "notes": True}) == "complete"
    assert pattern_name({"labs": True, "audio": False, "image": False}) == "missing: audio+image"
    present = pd.DataFrame(
        {"labs": [True, True], "image": [True, False], "audio": [False, False]}, index=["a", "b"]
    )
    assert patterns(present).to_dict() == {"a": "missing: audio", "b": "missing: image+audio"}
    assert missing_counts(present).to_dict() == {"a": "1", "b": "2"}


def test_auroc_by_pattern_scores_each_large_two_class_pattern_on_its_own_patients():
    ids = [f"p{i}" for i in range(13)]
    pattern = pd.Series(["complete"] * 6 + ["missing: image"] * 4 + ["missing: audio"] * 3, index=ids)
    labels = pd.Series([0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1], index=ids)
    risk = pd.Series(np.linspace(0.9, 0.1, 13), index=ids)
    # "missing: image" has one outcome only, "missing: audio" is below the size: neither is scored.
    assert scored_patterns(labels, pattern, min_patients=4) == ["complete"]
    assert scored_patterns(labels, pattern, min_patients=3) == ["complete", "missing: audio"]
    scores = auroc_by_pattern(labels, risk, pattern, ["complete", "missing: audio"])
    assert scores["complete"] == pytest.approx(auroc(labels[:6].to_numpy(), risk[:6].to_numpy()))
    assert scores["missing: audio"] == 0.0  # the risk falls along the index, the positives come last
    # A method that scores only some patients is scored on those of the pattern it covers.
    partial = risk.drop(["p0", "p1"])
    expected = auroc(labels[2:6].to_numpy(), risk[2:6].to_numpy())
    assert auroc_by_pattern(labels, partial, pattern, ["complete"])["complete"] == pytest.approx(expected)


def test_late_fusion_averages_only_the_modalities_a_patient_has():
    risks = pd.DataFrame(
        {"labs": [0.2, 0.4, 0.9], "image": [0.6, np.nan, np.nan], "audio": [0.1, 0.8, np.nan]},
        index=["a", "b", "c"],
    )
    fused = late_fusion(risks)
    assert fused.to_dict() == pytest.approx({"a": 0.3, "b": 0.6, "c": 0.9})
    with pytest.raises(ValueError, match="no single-modality risk"):
        late_fusion(pd.DataFrame({"labs": [np.nan]}, index=["d"]))


def test_early_fusion_features_put_zeros_and_a_zero_flag_where_a_modality_is_absent():
    image = pd.DataFrame([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], index=["b", "a"])
    audio = pd.DataFrame([[7.0, 8.0]], index=["c"])
    features = early_fusion_features({"image": image, "audio": audio}, ["a", "b", "c"])
    assert list(features.columns) == [
        "image:0", "image:1", "image:2", "image:present", "audio:0", "audio:1", "audio:present",
    ]  # fmt: skip
    assert features.loc["a"].tolist() == [4.0, 5.0, 6.0, 1.0, 0.0, 0.0, 0.0]
    assert features.loc["b"].tolist() == [1.0, 2.0, 3.0, 1.0, 0.0, 0.0, 0.0]
    assert features.loc["c"].tolist() == [0.0, 0.0, 0.0, 0.0, 7.0, 8.0, 1.0]


def test_ranking_agreement_against_the_generator_truth_with_its_ties():
    rho, top = ranking_agreement(TRUTH, TRUTH)
    assert (rho, top) == (pytest.approx(1.0), 1.0)
    reversed_scores = {m: -w for m, w in TRUTH.items()}
    rho, top = ranking_agreement(reversed_scores, TRUTH)
    assert (rho, top) == (pytest.approx(-1.0), 0.0)
    # Strictly ordered scores that agree with the truth still fall short of 1: the truth has ties.
    ordered = {m: float(6 - i) for i, m in enumerate(["labs", "notes", "cxr", "vitals", "pcg", "ecg"])}
    rho, top = ranking_agreement(ordered, TRUTH)
    assert 0.9 < rho < 1.0 and top == 1.0
    # The right top modality, the rest scrambled.
    rho, top = ranking_agreement({**{m: 0.0 for m in TRUTH}, "labs": 1.0, "ecg": 0.5}, TRUTH)
    assert top == 1.0 and rho < 0.9
    # A tie at the method's top with a modality that is not the truth's top is a miss.
    assert ranking_agreement({**{m: 0.0 for m in TRUTH}, "labs": 1.0, "pcg": 1.0}, TRUTH)[1] == 0.0
    assert math.isnan(ranking_agreement({m: 0.3 for m in TRUTH}, TRUTH)[0])
    undefined = ranking_agreement({**TRUTH, "pcg": math.nan}, TRUTH)
    assert math.isnan(undefined[0]) and math.isnan(undefined[1])
    with pytest.raises(ValueError, match="truth"):
        ranking_agreement({"labs": 1.0}, TRUTH)


def test_mean_over_present_ignores_patients_without_the_modality():
    values = np.array([[0.5, 0.0], [0.3, 0.7], [0.1, 0.0]])
    present = np.array([[True, False], [True, True], [True, False]])
    assert mean_over_present(values, present, ["labs", "image"]) == pytest.approx({"labs": 0.3, "image": 0.7})


def test_mlp_learns_a_separable_signal_and_is_seeded():
    torch.set_num_threads(1)  # as the part runs it (the autouse fixture restores the count)
    rng = np.random.default_rng(3)
    x = {s: rng.normal(size=(n, 5)) for s, n in (("train", 203), ("val", 61), ("test", 67))}
    y = {s: (v[:, 0] + 0.3 * rng.normal(size=len(v)) > 0).astype(int) for s, v in x.items()}
    settings = Settings(mlp_hidden=8, mlp_epochs=40, mlp_patience=5)
    first, again = fit_mlp(x, y, 1, settings), fit_mlp(x, y, 1, settings)
    assert auroc(y["test"], first.risk) > 0.9
    assert np.array_equal(first.risk, again.risk)
    assert 1 <= first.chosen["epochs"] <= 40


def test_a_tiny_run_gives_valid_rows_for_every_method_and_table(tmp_path):
    settings = Settings(
        n=60,
        missing_rates=(0.3,),
        seeds=1,
        epochs=1,
        patience=1,
        quick_sizes=True,
        min_pattern_patients=3,
        mlp_epochs=5,
    )
    rows = run(True, tmp_path, settings)
    assert [validate_row(row) for row in rows] == rows
    comparison = {r["method"] for r in rows if r["benchmark"] == "synth n=60, missing 30%"}
    singles = {single(m) for m in SIGNAL_WEIGHTS}
    assert {DEEPWE, LATE, EARLY, GB} <= comparison
    assert len(comparison & singles) >= 4  # a single-modality test set of a few patients may be one class
    deepwe_auroc = next(r for r in rows if r["method"] == DEEPWE and r["metric"] == "test AUROC")
    assert 0.5 < deepwe_auroc["anchor"] <= 1.0  # the oracle's latent log-odds
    ranking = {
        (r["method"], r["metric"]) for r in rows if r["benchmark"].startswith("synth modality ranking")
    }
    assert {(BY_WEIGHT, TOP), (BY_SHAPLEY, TOP), (BY_SINGLE, SPEARMAN)} <= ranking
    weights = [r for r in rows if r["method"] == BY_WEIGHT and r["metric"].startswith("mean weight")]
    assert len(weights) == len(SIGNAL_WEIGHTS) and all(0 < r["mean"] <= 1 for r in weights)
    counted = [r for r in rows if r["metric"].startswith("test AUROC, modalities missing: ")]
    assert {r["method"] for r in counted} <= {DEEPWE, LATE, EARLY, GB}
    table = markdown_table(rows)
    assert LATE in table and "missing 30%" in table and "top right" in table
