"""Evaluation numbers: bootstrap intervals, calibration before/after temperature, decision curves,
subgroup and missing-modality slices, and the join of real predictions to their cohort."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.evaluation.evaluation import (
    DECISION_THRESHOLDS,
    calibrated_risk,
    calibration,
    decision_curve,
    evaluate_predictions,
    group_metrics,
    modality_pattern,
    threshold_metrics,
    uncalibrated_risk,
)
from pipelines.evaluation.metrics import (
    auprc,
    auroc,
    average_precision,
    bootstrap_ci,
    calibration_slope_intercept,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_and_shift,
    multiclass_auroc,
    net_benefit,
    rank_auroc,
)
from pipelines.inference.batching import PredictOptions
from pipelines.inference.output_table import read_predictions
from pipelines.inference.predict import predict_cohort


def _scored(n: int, seed: int, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with prevalence 0.3 and noisy scores shifted up by ``separation`` for positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    return labels, rng.normal(size=n) + separation * labels


def test_numpy_metrics_equal_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(25):
        n = int(rng.integers(5, 60))
        labels = rng.integers(0, 2, n)
        scores = np.round(rng.random(n), 1)  # many ties
        for fast, reference in ((rank_auroc, auroc), (average_precision, auprc)):
            a, b = fast(labels, scores), reference(labels, scores)
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_patients():
    widths = []
    for n in (60, 2000):
        labels, scores = _scored(n, seed=n)
        estimate, low, high = bootstrap_ci(labels, scores, rank_auroc, n_boot=300, seed=0)
        assert estimate == pytest.approx(auroc(labels, scores))
        assert low <= estimate <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_bootstrap_is_seeded_and_undefined_for_one_class():
    labels, scores = _scored(80, seed=1)
    assert bootstrap_ci(labels, scores, rank_auroc, 100, seed=5) == bootstrap_ci(
        labels, scores, rank_auroc, 100, seed=5
    )
    estimate, low, high = bootstrap_ci(np.zeros(30, int), scores[:30], rank_auroc, 100)
    assert math.isnan(estimate) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(labels, scores, rank_auroc, level=95)


def test_perfect_and_random_scores():
    labels, _ = _scored(4000, seed=2)
    assert rank_auroc(labels, labels + 0.1) == 1.0
    assert average_precision(labels, labels * 2.0) == 1.0
    random_scores = np.random.default_rng(9).random(4000)
    assert rank_auroc(labels, random_scores) == pytest.approx(0.5, abs=0.04)
    assert average_precision(labels, random_scores) == pytest.approx(labels.mean(), abs=0.04)


def test_uncalibrated_risk_recovers_the_raw_softmax():
    # logit gaps within +-8 keep every risk clear of the [1e-7, 1 - 1e-7] clip even at T = 0.6
    logits = (torch.randn(50, 2, dtype=torch.float64) * 2).clamp(-4, 4)
    for temperature in (1.0, 0.6, 2.5):
        calibrated = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
        raw = torch.softmax(logits, dim=1)[:, 1].numpy()
        np.testing.assert_allclose(uncalibrated_risk(calibrated, temperature), raw, atol=1e-6)
        np.testing.assert_allclose(calibrated_risk(raw, temperature), calibrated, atol=1e-6)
    risk = np.linspace(0.01, 0.99, 41)
    np.testing.assert_allclose(uncalibrated_risk(risk, 1.0), risk, atol=1e-12)
    np.testing.assert_allclose(calibrated_risk(uncalibrated_risk(risk, 1.7), 1.7), risk, atol=1e-12)
    assert np.isfinite(uncalibrated_risk(np.array([0.0, 1.0]), 3.0)).all()  # clipped before the logit
    for shift in (-1.3, 0.8):  # a shift of the positive logit, folded into the weights by training
        calibrated = torch.softmax((logits + torch.tensor([0.0, shift])) / 1.7, dim=1)[:, 1].numpy()
        raw = torch.softmax(logits, dim=1)[:, 1].numpy()
        np.testing.assert_allclose(uncalibrated_risk(calibrated, 1.7, shift), raw, atol=1e-6)
        np.testing.assert_allclose(calibrated_risk(raw, 1.7, shift), calibrated, atol=1e-6)


def test_calibration_slope_and_intercept_find_known_miscalibration():
    rng = np.random.default_rng(4)
    risk = rng.uniform(0.02, 0.98, 20000)
    labels = (rng.random(20000) < risk).astype(int)
    slope, intercept = calibration_slope_intercept(labels, risk)
    assert slope == pytest.approx(1.0, abs=0.08) and intercept == pytest.approx(0.0, abs=0.06)
    overconfident = uncalibrated_risk(risk, 2.0)  # logit doubled
    assert calibration_slope_intercept(labels, overconfident)[0] == pytest.approx(0.5, abs=0.05)
    assert all(math.isnan(v) for v in calibration_slope_intercept(np.ones(10), risk[:10]))


def test_reliability_bins_agree_with_ece():
    labels, scores = _scored(500, seed=5)
    risk = 1 / (1 + np.exp(-scores))
    result = calibration(labels, risk)
    counts = np.array([b.count for b in result.bins])
    assert len(result.bins) == 10 and counts.sum() == 500
    gaps = [b.count / 500 * abs(b.observed_rate - b.mean_risk) for b in result.bins if b.count]
    assert sum(gaps) == pytest.approx(expected_calibration_error(labels, risk))
    assert all(b.lower <= b.mean_risk <= b.upper for b in result.bins if b.count)
    assert result.brier == pytest.approx(np.mean((risk - labels) ** 2))


def test_net_benefit_of_treat_all_and_treat_none():
    labels, scores = _scored(300, seed=6)
    risk = 1 / (1 + np.exp(-scores))
    prevalence = labels.mean()
    assert net_benefit(labels, np.ones(300), np.array([0.0]))[0] == pytest.approx(prevalence)
    assert net_benefit(labels, risk, np.array([0.0]))[0] == pytest.approx(prevalence)
    curve = decision_curve(labels, risk)
    assert curve.thresholds == DECISION_THRESHOLDS.tolist() and len(curve.model) == 99
    assert curve.treat_none == [0.0] * 99
    assert curve.treat_all[0] == pytest.approx(prevalence - (1 - prevalence) * 0.01 / 0.99)
    assert curve.model[-1] == pytest.approx(net_benefit(labels, risk, np.array([0.99]))[0])


def test_group_with_one_class_or_few_patients_is_nan_with_a_reason():
    labels, scores = _scored(200, seed=7)
    keys = np.where(np.arange(200) < 150, "big", "small").astype(object)
    keys[labels == 0] = np.where(np.arange(200)[labels == 0] % 2, "big", "negatives")
    keys[:5] = "tiny"
    groups = {g.value: g for g in group_metrics("site", keys, labels, scores, n_boot=50)}
    assert sum(g.n for g in groups.values()) == 200
    assert groups["negatives"].positives == 0 and "one outcome class" in groups["negatives"].reason
    assert math.isnan(groups["negatives"].auroc.estimate) and math.isnan(groups["negatives"].auprc.high)
    assert groups["tiny"].n == 5 and "fewer than 10" in groups["tiny"].reason
    big = groups["big"]
    assert big.reason is None and big.auroc.low <= big.auroc.estimate <= big.auroc.high


def test_threshold_confusion_matrix():
    labels = np.array([1, 1, 0, 0, 1])
    risk = np.array([0.9, 0.2, 0.6, 0.1, 0.5])
    result = threshold_metrics(labels, risk, 0.5)
    assert (result.tp, result.fp, result.tn, result.fn) == (2, 1, 1, 1)
    assert result.sensitivity == pytest.approx(2 / 3) and result.ppv == pytest.approx(2 / 3)
    assert threshold_metrics(labels, risk, None).threshold == 0.5


def test_modality_pattern_is_sorted_present_names():
    assert modality_pattern({"notes": True, "cxr": False, "labs": True}) == "labs+notes"
    assert modality_pattern({"labs": False}) == "none"


@pytest.fixture(scope="module")
def predicted(bundle_path, cohort_60, tmp_path_factory):
    bundle = load_bundle(bundle_path)
    out = tmp_path_factory.mktemp("evaluate") / "predictions.parquet"
    predict_cohort(bundle, cohort_60, out, PredictOptions(top_features=1, neighbours=1), progress=False)
    return read_predictions(out), load_cohort(cohort_60), bundle.temperature, bundle.threshold


def test_evaluate_real_predictions_all_labelled(predicted):
    predictions, cohort, temperature, threshold = predicted
    result = evaluate_predictions(
        predictions, cohort, temperature=temperature, threshold=threshold, split=None, n_boot=50
    )
    expected = int(((predictions["status"] == "ok") & cohort.table["died"].notna()).sum())
    assert result.n == expected == 60 and result.split is None
    assert result.positives == int((cohort.table["died"].astype(str) == "1").sum())
    matrix = result.threshold
    assert matrix.tp + matrix.fp + matrix.tn + matrix.fn == result.n and matrix.source == "bundle"
    assert result.auroc.low <= result.auroc.estimate <= result.auroc.high
    assert {g.group for g in result.subgroups} == {"sex", "age_band"}
    assert sum(g.n for g in result.subgroups if g.group == "sex") == result.n
    assert sum(g.n for g in result.modality_patterns) == result.n
    assert {"after", "before"} == set(result.calibration)
    assert sum(b.count for b in result.calibration["before"].bins) == result.n
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["excluded"] == {
        "error": 0,
        "unlabelled": 0,
        "unknown_outcome": 0,
        "outside_split": 0,
    }


def test_evaluate_counts_excluded_rows_and_restricts_to_the_split(predicted):
    predictions, cohort, temperature, _ = predicted
    predictions = predictions.copy()
    predictions.loc[[0, 1, 2], ["status", "risk"]] = ["error", None]
    table = cohort.table.copy()
    table.loc[[3, 4], "died"] = None
    edited = dataclasses.replace(cohort, table=table)
    result = evaluate_predictions(predictions, edited, temperature=temperature, threshold=None, n_boot=20)
    in_test = np.array([edited.split_of(r) == "test" for r in range(1, 61)])
    counted = in_test.copy()
    counted[:5] = False
    assert result.split == "test" and result.n == int(counted.sum())
    assert result.excluded == {
        "error": 3,
        "unlabelled": 2,
        "unknown_outcome": 0,
        "outside_split": 55 - result.n,
    }
    assert result.threshold.source.startswith("default")
    assert sum(result.decision_curve.treat_none) == 0


def test_evaluate_falls_back_to_all_rows_when_the_split_is_empty(predicted):
    predictions, cohort, temperature, threshold = predicted
    table = cohort.table.copy()
    table["split"] = table["split"].replace("test", "val")
    result = evaluate_predictions(
        predictions,
        dataclasses.replace(cohort, table=table),
        temperature=temperature,
        threshold=threshold,
        n_boot=20,
    )
    assert result.split is None and result.n == 60
    assert any("'test' split" in note for note in result.notes)


def test_evaluate_refuses_predictions_of_another_cohort(predicted):
    predictions, cohort, _, _ = predicted
    table = cohort.table.copy()
    table.loc[7, "patient_id"] = "SOMEONE-ELSE"
    with pytest.raises(ValueError, match=r"rows \[8\]"):
        evaluate_predictions(
            predictions, dataclasses.replace(cohort, table=table), temperature=1.0, threshold=0.5
        )
    with pytest.raises(ValueError, match="repeat"):
        evaluate_predictions(predictions.iloc[[0, 0, 1]], cohort, temperature=1.0, threshold=0.5)


def test_multiclass_reports_macro_auroc_only(tmp_path):
    rng = np.random.default_rng(11)
    classes = ["a", "b", "c"]
    outcome = rng.integers(0, 3, 40)
    pd.DataFrame(
        {
            "pid": [f"P{i:03d}" for i in range(40)],
            "grade": [classes[k] for k in outcome],
            "age": rng.integers(20, 90, 40),
        }
    ).to_csv(tmp_path / "cohort.csv", index=False)
    (tmp_path / "cohort.yaml").write_text(
        "name: three\ntable: cohort.csv\nid: pid\n"
        "outcome: {column: grade, task: multiclass, classes: [a, b, c]}\n"
        "modalities:\n  labs: {kind: tabular, numeric: [age]}\n"
    )
    logits = rng.normal(size=(40, 3)) + 2 * np.eye(3)[outcome]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions = pd.DataFrame(
        {
            "row": np.arange(1, 41),
            "patient_id": [f"P{i:03d}" for i in range(40)],
            "status": "ok",
            "probabilities": [json.dumps(dict(zip(classes, p.tolist(), strict=True))) for p in probabilities],
        }
    )
    result = evaluate_predictions(
        predictions,
        load_cohort(tmp_path / "cohort.yaml"),
        temperature=1.3,
        threshold=None,
        split=None,
        n_boot=30,
    )
    assert result.task == "multiclass" and result.classes == classes and result.n == 40
    assert result.auroc.estimate == pytest.approx(multiclass_auroc(outcome, probabilities))
    assert result.auprc is None and result.threshold is None and result.subgroups == []
    assert any("multiclass" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False)


def test_evaluate_names_missing_prediction_columns(predicted):
    predictions, cohort, _, _ = predicted
    with pytest.raises(ValueError, match="modality_present"):
        evaluate_predictions(
            predictions.drop(columns="modality_present"), cohort, temperature=1.0, threshold=0.5
        )


def test_temperature_and_shift_recover_a_known_miscalibration():
    # True log-odds z; the model reports 2z + 1.5 (overconfident and shifted, as class weighting does).
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(4000, generator=generator, dtype=torch.float64) * 1.5
    labels = torch.bernoulli(torch.sigmoid(z), generator=generator).long()
    logits = torch.stack([torch.zeros_like(z), 2 * z + 1.5], dim=1)
    temperature, shift = fit_temperature_and_shift(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert shift == pytest.approx(-1.5, abs=0.2)
    raw = torch.softmax(logits, dim=1)[:, 1].numpy()
    fixed = calibrated_risk(raw, temperature, shift)
    assert expected_calibration_error(labels.numpy(), fixed) < 0.03
    assert (
        expected_calibration_error(labels.numpy(), calibrated_risk(raw, fit_temperature(logits, labels)))
        > 0.08
    )
