"""Cohort-level modality effects on a real tiny bundle, and how feature selection is scored against a
synthetic cohort's ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.explanations.explaining import reference_base_rate
from pipelines.reports.modality_effects import (
    ModalityEffects,
    modality_effects,
    selected_shares,
    selection_against_truth,
)


def _effects(selections: dict[str, list[tuple[frozenset[str], frozenset[str]]]]) -> ModalityEffects:
    empty = np.zeros(0)
    return ModalityEffects([], empty, {}, empty, empty, {}, empty, selections)


def test_selection_tpr_and_fdr_are_per_patient_means_over_judged_tokens() -> None:
    informative, judged = {"lactate", "age"}, {"lactate", "age", "sodium", "bmi"}
    patients = [
        # both informative selected, one noise: TPR 1, FDR 1/3
        (frozenset({"lactate", "age", "sodium"}), frozenset({"lactate", "age", "sodium", "bmi"})),
        # lactate not measured: TPR over age only (0), FDR 1 (bmi)
        (frozenset({"bmi", "missing pattern"}), frozenset({"age", "sodium", "bmi", "missing pattern"})),
        # nothing selected: TPR 0, FDR 0
        (frozenset(), frozenset({"lactate"})),
    ]
    tpr, fdr = selection_against_truth(patients, informative, judged)
    assert tpr == pytest.approx((1 + 0 + 0) / 3)
    assert fdr == pytest.approx((1 / 3 + 1 + 0) / 3)  # the unjudged "missing pattern" token is ignored
    assert all(math.isnan(v) for v in selection_against_truth([], informative, judged))


def test_selected_shares_count_patients_where_the_token_was_observed() -> None:
    effects = _effects(
        {
            "labs": [
                (frozenset({"lactate"}), frozenset({"lactate", "sodium"})),
                (frozenset(), frozenset({"lactate"})),
                (frozenset({"lactate", "sodium"}), frozenset({"lactate", "sodium"})),
            ]
        }
    )
    assert selected_shares(effects) == {("labs", "lactate"): pytest.approx(2 / 3), ("labs", "sodium"): 0.5}


@pytest.mark.slow
def test_modality_effects_shapley_adds_up_and_ablation_touches_only_present_modalities(
    bundle_path, cohort_60
):
    bundle, cohort = load_bundle(bundle_path), load_cohort(cohort_60)
    effects = modality_effects(bundle, cohort, range(len(cohort.table)), batch_size=7)
    base = reference_base_rate(bundle, 1)
    assert effects.shapley.shape == (len(cohort.table), len(effects.modalities))
    np.testing.assert_allclose(effects.shapley.sum(1), effects.risk - base, atol=1e-5)
    absent = effects.modality_weights == 0.0  # (N, M): what the model did not see
    assert absent.any() and (~absent).any()
    for row, k in zip(*np.nonzero(absent), strict=True):
        assert effects.shapley[row, k] == 0.0
        assert effects.without[effects.modalities[k]][row] == effects.risk[row]
