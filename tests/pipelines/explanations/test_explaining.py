"""Per-patient explanations on a real tiny bundle: completeness, Shapley efficiency, absent modalities,
faithfulness, the CLI and its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipelines.bundles.loading import load_bundle
from pipelines.cli import app
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.explanations.explaining import UnknownPatient, explain_patient
from pipelines.inference.batching import PredictOptions, iter_predictions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(bundle_path: Path, cohort_60: Path):
    return load_bundle(bundle_path), load_cohort(cohort_60)


def _truth(cohort_60: Path) -> dict:
    return json.loads((cohort_60.parent / "ground_truth.json").read_text())


def _patient_missing_something(cohort_60: Path) -> tuple[str, list[str]]:
    for patient in _truth(cohort_60)["patients"]:
        missing = [m for m in patient["missing"] if m != "labs"]  # demographics keep labs present
        if 0 < len(missing) < 4:
            return patient["patient_id"], missing
    raise AssertionError("the synthetic cohort should have patients with a missing modality")


def test_shapley_values_add_up_and_absent_modalities_get_exactly_zero(loaded, cohort_60):
    bundle, cohort = loaded
    patient, missing = _patient_missing_something(cohort_60)
    explanation = explain_patient(bundle, cohort, patient, steps=16)
    risk = explanation.prediction.risk
    assert sum(explanation.shapley.values()) == pytest.approx(risk - explanation.base_value, abs=1e-5)
    for name in missing:
        assert explanation.shapley[name] == 0.0
        assert name not in explanation.modalities
        assert explanation.prediction.modality_weights[name] == 0.0
    # The explained prediction is the one batch prediction makes for that row.
    position = int(np.flatnonzero(cohort.table[cohort.spec.id].astype(str) == patient)[0])
    batch_record = next(iter_predictions(bundle, cohort, [position], PredictOptions()))
    assert batch_record.risk == pytest.approx(risk, abs=1e-6)


def test_integrated_gradients_completeness_error_is_small(loaded, cohort_60):
    bundle, cohort = loaded
    explanation = explain_patient(bundle, cohort, _truth(cohort_60)["patients"][0]["patient_id"], steps=64)
    assert explanation.modalities
    for name, item in explanation.modalities.items():
        assert abs(item.delta) < 0.02, (name, item.delta, item.difference)
        assert item.token_attribution.shape == (len(item.tokens),)
        assert item.feature_weights.shape == (len(item.tokens),)
    kinds = {item.kind for item in explanation.modalities.values()}
    if "text" in kinds:
        text = next(item for item in explanation.modalities.values() if item.kind == "text")
        assert text.extras["words"] and all(isinstance(w, str) for w, _ in text.extras["words"])
        assert "[CLS]" not in [w for w, _ in text.extras["words"]]


def test_gradient_x_input_attributes_the_same_score_difference_as_integrated_gradients(loaded, cohort_60):
    bundle, cohort = loaded
    patient = _truth(cohort_60)["patients"][3]["patient_id"]
    ig = explain_patient(bundle, cohort, patient, steps=8)
    gxi = explain_patient(bundle, cohort, patient, method="gradient_x_input")
    assert gxi.modalities.keys() == ig.modalities.keys() and gxi.modalities
    assert gxi.shapley == pytest.approx(ig.shapley)
    for name, item in gxi.modalities.items():
        other = ig.modalities[name]
        # Same tensor, layer and baseline: the explained score difference is the same number.
        assert item.difference == pytest.approx(other.difference, abs=1e-5), name
        assert item.attribution.shape == other.attribution.shape
        assert item.token_attribution.shape == (len(item.tokens),)
        assert "Integrated Gradients" not in item.method and "radient x input" in item.method
    assert any(
        not torch.allclose(item.attribution, ig.modalities[name].attribution, atol=1e-6)
        for name, item in gxi.modalities.items()
    )


def test_deletion_by_integrated_gradients_beats_random_order(loaded, cohort_60):
    bundle, cohort = loaded
    deletion, random_deletion = [], []
    for patient in _truth(cohort_60)["patients"][:6]:
        explanation = explain_patient(bundle, cohort, patient["patient_id"], steps=16, faithfulness=True)
        deletion.append(explanation.faithfulness.aucs["deletion"])
        for item in explanation.modalities.values():  # Captum's robustness measures, where defined
            if item.kind in ("tabular", "sensor", "image"):
                assert item.infidelity >= 0 and item.sensitivity >= 0
            else:
                assert np.isnan(item.infidelity)
        random_deletion.append(explanation.faithfulness.aucs["random_deletion"])
    assert np.mean(deletion) < np.mean(random_deletion)


def test_unknown_patient_is_a_clear_error(loaded):
    bundle, cohort = loaded
    with pytest.raises(UnknownPatient, match="no patient with id 'NOBODY'"):
        explain_patient(bundle, cohort, "NOBODY")


def test_cli_writes_json_and_pictures(bundle_path, cohort_60, tmp_path):
    patient = _truth(cohort_60)["patients"][2]["patient_id"]
    out = tmp_path / "why"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(bundle_path),
            str(cohort_60),
            "--patient",
            patient,
            "--out",
            str(out),
            "--steps",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "explanation.json").read_text())
    assert data["patient_id"] == patient
    assert sum(data["shapley"]["values"].values()) == pytest.approx(
        data["risk"] - data["shapley"]["base_value"], abs=1e-5
    )
    assert (out / "contributions.png").read_bytes().startswith(b"\x89PNG")
    for name, item in data["modalities"].items():
        expected = out / (f"{name}.html" if item["kind"] == "text" else f"{name}.png")
        assert expected.is_file(), expected
    assert all(patient not in path.name for path in out.iterdir())
    missing = CliRunner().invoke(app, ["explain", str(bundle_path), str(cohort_60), "--patient", "NOBODY"])
    assert missing.exit_code == 2 and "no patient with id" in missing.output
