"""How the report scores feature selection against a synthetic cohort's ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.reports.reporting import ModalityEffects, selected_shares, selection_against_truth


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
