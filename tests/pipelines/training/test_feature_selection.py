"""Feature weights tell the variables that carry the outcome from noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pipelines

INFORMATIVE = ["lactate", "creatinine", "age"]
NOISE = ["sodium", "potassium", "bmi", "glucose"]


def _labs_cohort(n: int, seed: int) -> pipelines.Cohort:
    """Seven standardised labs; the log-odds is 1.5 × the sum of the three informative ones."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(INFORMATIVE) + len(NOISE)))
    log_odds = 1.5 * values[:, : len(INFORMATIVE)].sum(1) - 1.0
    frame = pd.DataFrame(values.round(3), columns=INFORMATIVE + NOISE)
    frame.insert(0, "pid", [f"P{i:04d}" for i in range(n)])
    frame["died"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-log_odds))).astype(int)
    frame["split"] = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15])
    spec = {
        "name": "labs-with-known-answer",
        "id": "pid",
        "outcome": {"column": "died", "task": "binary", "positive": 1},
        "split": {"column": "split"},
        "modalities": {"labs": {"kind": "tabular", "numeric": INFORMATIVE + NOISE}},
    }
    return pipelines.Cohort.from_frame(frame, spec)


def _mean_test_weights(bundle, cohort: pipelines.Cohort) -> dict[str, float]:
    """Each lab's mean feature weight over the first 40 test patients, from their explanations."""
    test_ids = cohort.table.loc[cohort.table["split"] == "test", "pid"].tolist()[:40]
    weights: dict[str, list[float]] = {name: [] for name in INFORMATIVE + NOISE}
    for patient in test_ids:
        labs = bundle.explain(cohort, patient).modalities["labs"]
        for token, weight in zip(labs.tokens, labs.feature_weights.tolist(), strict=True):
            if token in weights:
                weights[token].append(weight)
    return {name: float(np.mean(values)) for name, values in weights.items()}


@pytest.mark.slow
def test_the_sparsity_chosen_on_validation_makes_informative_labs_outweigh_noise(tmp_path) -> None:
    """Like ``deepwe tune``, this test chooses the sparsity weight by validation log-loss, here among
    the default and two stronger ones. Few variables with a strong signal call for a stronger one,
    and with it the weights tell informative labs from noise. (The gradient-boosting teacher's
    probabilities lean a little on the noise labs too, so with it the weight that selects is 0.1;
    without it, 0.05.)"""
    cohort = _labs_cohort(600, seed=0)
    candidates = {
        weight: pipelines.train(
            cohort,
            {"seed": 0, "fusion": {"lambda_sparsity": weight}},
            out=tmp_path / f"{weight}",
            device="cpu",
        )
        for weight in (0.01, 0.05, 0.1)
    }
    chosen = min(candidates, key=lambda weight: candidates[weight].metrics["val"]["log_loss"])
    bundle = candidates[chosen]
    mean = _mean_test_weights(bundle, cohort)
    assert min(mean[t] for t in INFORMATIVE) > max(mean[t] for t in NOISE) + 0.2, (chosen, mean)
    assert min(mean[t] for t in INFORMATIVE) > 0.5 > np.mean([mean[t] for t in NOISE]), (chosen, mean)


@pytest.mark.slow
def test_selection_epochs_let_an_mlp_projection_weigh_informative_labs_above_noise(tmp_path) -> None:
    """With an MLP projection the predictor ignores the noise labs itself and the gates stay open
    in joint training; selection epochs (only the gates train, against the frozen predictor) then
    close the noise labs' gates more than the informative labs'."""
    cohort = _labs_cohort(600, seed=0)
    bundle = pipelines.train(
        cohort,
        {"seed": 0, "fusion": {"projection": "mlp"}, "selection_epochs": 5},
        out=tmp_path / "selected",
        device="cpu",
    )
    assert bundle.metrics["selection"]["kept_epoch"] > 0
    mean = _mean_test_weights(bundle, cohort)
    noise = np.mean([mean[t] for t in NOISE])
    assert np.mean([mean[t] for t in INFORMATIVE]) > noise + 0.15, mean
    assert min(mean[t] for t in INFORMATIVE) > noise, mean
