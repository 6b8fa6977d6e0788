"""What the report gathers, on a real tiny bundle: the model-randomisation check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.reports.report_inputs import randomisation_check

pytestmark = pytest.mark.slow


def _patient_id(cohort_60: Path, index: int) -> str:
    return json.loads((cohort_60.parent / "ground_truth.json").read_text())["patients"][index]["patient_id"]


def test_randomised_model_changes_the_attributions_and_is_restored(bundle_path, cohort_60):
    bundle, cohort = load_bundle(bundle_path), load_cohort(cohort_60)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    agreement = randomisation_check(bundle, cohort, _patient_id(cohort_60, 1), steps=8)
    assert agreement < 0.95
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
