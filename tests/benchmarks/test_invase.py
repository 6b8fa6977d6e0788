"""The INVASE benchmark's logic: the Syn1-Syn6 generator, its ground truth, and the selection metrics.

Nothing here trains DeepWe or TabNet.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.invase import (
    DATASETS,
    FEATURES,
    RANDOM_TOP_K,
    TEST_AUROC,
    WEIGHTS,
    generate,
    log_odds,
    markdown_table,
    relevant_features,
    summary_rows,
    top_k,
    tpr_fdr,
    write_cohort,
)
from pipelines.cohorts.validate import validate_cohort
from pipelines.evaluation.metrics import auroc

EXPECTED = {  # 0-based relevant features where X11 < 0, and where X11 >= 0
    "syn1": ({0, 1}, {0, 1}),
    "syn2": ({2, 3, 4, 5}, {2, 3, 4, 5}),
    "syn3": ({6, 7, 8, 9}, {6, 7, 8, 9}),
    "syn4": ({0, 1, 10}, {2, 3, 4, 5, 10}),
    "syn5": ({0, 1, 10}, {6, 7, 8, 9, 10}),
    "syn6": ({2, 3, 4, 5, 10}, {6, 7, 8, 9, 10}),
}


def _point(**values: float) -> np.ndarray:
    """One (1, 11) sample with X1..X11 set by name (others 0)."""
    x = np.zeros((1, 11))
    for name, value in values.items():
        x[0, FEATURES.index(name)] = value
    return x


@pytest.mark.parametrize("dataset", DATASETS)
def test_masks_are_the_paper_subsets_and_switch_with_the_sign_of_x11(dataset):
    data = generate(dataset, n_train=40, n_test=23, seed=1)
    negative = data.x[:, 10] < 0
    assert negative.any() and (~negative).any()
    for row in range(len(data.x)):
        expected = EXPECTED[dataset][0 if negative[row] else 1]
        assert set(np.flatnonzero(data.relevant[row])) == expected
    assert np.array_equal(data.relevant, relevant_features(dataset, data.x))


def test_log_odds_follow_the_paper_formulas():
    # P(Y=1) = 1 / (1 + exp(L)), so the log-odds of Y = 1 are -L.
    assert log_odds("syn1", _point(X1=1.5, X2=-2.0))[0] == pytest.approx(3.0)
    assert log_odds("syn2", _point(X3=1, X4=1, X5=1, X6=2))[0] == pytest.approx(-(7 - 4))
    syn3 = _point(X7=0.3, X8=-1.2, X9=0.5, X10=0.7)
    expected = -(-10 * np.sin(0.6) + 2 * 1.2 + 0.5 + np.exp(-0.7))
    assert log_odds("syn3", syn3)[0] == pytest.approx(expected)
    both = np.concatenate([_point(X1=1, X2=2, X3=3, X11=-0.1), _point(X1=1, X2=2, X3=3, X11=0.0)])
    assert log_odds("syn4", both) == pytest.approx([-2.0, -(9 - 4)])
    assert log_odds("syn6", both)[0] == pytest.approx(-(9 - 4))


@pytest.mark.parametrize("dataset", DATASETS)
def test_labels_follow_the_true_probabilities(dataset):
    data = generate(dataset, n_train=3000, n_test=1000, seed=0)
    probability = 1 / (1 + np.exp(-data.log_odds))
    spread = 4 * np.sqrt((probability * (1 - probability)).sum()) / len(probability)
    assert abs(data.y.mean() - probability.mean()) < spread
    assert auroc(data.y, data.log_odds) > 0.65  # the Bayes AUROC: about 0.70 (Syn1) to 0.99 (Syn3)


def test_draws_are_seeded_and_split_train_val_test():
    a = generate("syn5", n_train=50, n_test=20, val_fraction=0.2, seed=3)
    b = generate("syn5", n_train=50, n_test=20, val_fraction=0.2, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, generate("syn5", n_train=50, n_test=20, seed=4).x)
    assert not np.array_equal(a.x, generate("syn6", n_train=50, n_test=20, seed=3).x)
    assert [len(a.rows(s)) for s in ("train", "val", "test")] == [40, 10, 20]
    with pytest.raises(ValueError, match="syn7"):
        generate("syn7")


def test_tpr_fdr_on_hand_made_masks():
    relevant = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=bool)
    selected = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=bool)
    tpr, fdr = tpr_fdr(selected, relevant)
    assert tpr == pytest.approx([0.5, 1.0, 0.0])
    assert fdr == pytest.approx([2 / 3, 0.0, 0.0])  # nothing selected: no false discovery


def test_top_k_takes_each_rows_k_largest_and_breaks_ties_at_random():
    scores = np.array([[0.1, 0.9, 0.3, 0.7], [-5.0, 2.0, 2.0, 1.0]])
    chosen = top_k(scores, np.array([2, 1]))
    assert chosen[0].tolist() == [False, True, False, True]
    assert chosen[1, 1] ^ chosen[1, 2] and chosen.sum(1).tolist() == [2, 1]
    # All-equal scores select like a random draw: not always the first features.
    flat = top_k(np.zeros((2000, 11)), np.full(2000, 2))
    assert flat.sum(1).tolist() == [2] * 2000
    assert np.allclose(flat.mean(0), 2 / 11, atol=0.03)


def test_written_cohort_validates_with_one_tabular_modality(tmp_path):
    data = generate("syn4", n_train=30, n_test=13, seed=0)
    report = validate_cohort(write_cohort(data, tmp_path / "cohort"))
    assert report.cohort is not None, report.problems
    spec = report.cohort.spec
    assert list(spec.modalities) == ["features"]
    assert spec.modalities["features"].numeric == list(FEATURES)
    assert report.cohort.table["split"].tolist() == data.split.tolist()


def test_summary_rows_take_mean_and_sample_sd_over_seeds():
    runs = [
        {WEIGHTS: {"tpr": 0.5, "fdr": 0.2}, "deepwe": {TEST_AUROC: 0.7}, RANDOM_TOP_K: {"tpr": 0.3}},
        {WEIGHTS: {"tpr": 0.7, "fdr": 0.4}, "deepwe": {TEST_AUROC: 0.9}, RANDOM_TOP_K: {"tpr": 0.4}},
    ]
    rows = summary_rows({"syn2": runs})
    tpr = next(r for r in rows if r["metric"] == "tpr")
    assert tpr == {
        "benchmark": "invase-syn2",
        "method": WEIGHTS,
        "metric": "tpr",
        "mean": 0.6,
        "sd": round(float(np.std([0.5, 0.7], ddof=1)), 4),  # rows keep 4 decimals
        "n": 2,
        "anchor": 0.35,  # the random top-k selection of the same seeds
    }
    assert next(r for r in rows if r["metric"] == "fdr")["anchor"] is None  # no random fdr measured
    assert next(r for r in rows if r["method"] == RANDOM_TOP_K)["anchor"] is None
    table = markdown_table(rows)
    assert "| syn2 | 0.800 ± 0.141 | - | - | 0.60 ± 0.14 / 0.30 ± 0.14 |" in table
    assert summary_rows({"syn1": runs[:1]})[0]["sd"] is None
