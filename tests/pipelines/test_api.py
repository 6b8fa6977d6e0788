"""The Python API: cohorts from DataFrames, ``train`` to a bundle, a bundle's predictions,
evaluation and explanations, and the package's exported names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

import pipelines
from pipelines.api import predict_table
from pipelines.cohorts.cohort_table import Cohort, assign_split, load_cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.evaluation.evaluation import evaluate_predictions
from pipelines.explanations.explaining import UnknownPatient
from pipelines.training.train import train as train_to_folder

from .conftest import TINY


def _csv(spec_path: Path) -> pd.DataFrame:
    return pd.read_csv(spec_path.parent / "cohort.csv")


def test_the_package_exports_the_api_even_after_its_submodules_load() -> None:
    import pipelines.api
    import pipelines.bundles.loading
    import pipelines.cohorts.cohort_table
    import pipelines.training.train  # the module of the function behind the API's train
    from pipelines import Cohort as exported_cohort
    from pipelines import load_bundle, load_cohort, train

    assert train is pipelines.api.train
    assert pipelines.train is pipelines.api.train
    assert exported_cohort is Cohort
    assert load_cohort is pipelines.cohorts.cohort_table.load_cohort
    assert load_bundle is pipelines.api.load_bundle


def test_a_frame_cohort_reads_the_same_records_as_the_cohort_on_disk(cohort_60: Path) -> None:
    on_disk = load_cohort(cohort_60)
    spec = yaml.safe_load(cohort_60.read_text())
    text = pd.read_csv(cohort_60.parent / "cohort.csv", dtype=str, keep_default_na=False)
    from_frame = Cohort.from_frame(text, spec, root=cohort_60.parent)
    assert from_frame.in_memory and not on_disk.in_memory
    assert from_frame.data_root == on_disk.data_root
    assert from_frame.ids == on_disk.ids
    assert list(from_frame.records()) == list(on_disk.records())


def test_a_spec_path_sets_the_root_and_the_current_directory_is_the_default(
    cohort_60: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _csv(cohort_60)
    by_path = Cohort.from_frame(frame, cohort_60)
    assert by_path.data_root == cohort_60.parent.resolve()
    monkeypatch.chdir(tmp_path)
    by_mapping = Cohort.from_frame(frame, yaml.safe_load(cohort_60.read_text()))
    assert by_mapping.data_root == tmp_path.resolve()


def test_an_invalid_spec_mapping_lists_its_problems(cohort_60: Path) -> None:
    spec = yaml.safe_load(cohort_60.read_text()) | {"idd": "patient_id"}
    with pytest.raises(SpecError) as raised:
        Cohort.from_frame(_csv(cohort_60), spec)
    assert [p.column for p in raised.value.problems] == ["idd"]


def test_split_writes_an_assignment_in_memory(cohort_60: Path) -> None:
    cohort = load_cohort(cohort_60)
    n = len(cohort.table)
    chosen = ["train"] * (n - 10) + ["val"] * 5 + ["test"] * 5
    moved = cohort.split(chosen)
    assert moved.in_memory and moved.spec.split.column == "split"
    assert [r.split for r in moved.records()] == chosen
    by_id = cohort.split({cohort.ids[0]: "test"})
    assert by_id.split_of(1) == "test" and by_id.split_of(2) is None
    assert [r.split for r in cohort.records()] != chosen  # the original is untouched


def test_split_draws_a_seeded_patient_level_split(cohort_60: Path) -> None:
    cohort = load_cohort(cohort_60)
    drawn = cohort.split(seed=5, fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    expected = [assign_split(patient, drawn.spec.split) for patient in cohort.ids]
    assert [drawn.split_of(row) for row in range(1, len(cohort.table) + 1)] == expected
    assert drawn.split(seed=5).spec.split.seed == 5


def test_split_refuses_unknown_values_and_wrong_lengths(cohort_60: Path) -> None:
    cohort = load_cohort(cohort_60)
    with pytest.raises(ValueError, match="'training'"):
        cohort.split(["training"] * len(cohort.table))
    with pytest.raises(ValueError, match="a split per row"):
        cohort.split(["train"])


def test_training_refuses_a_frame_whose_file_escapes_its_root(cohort_60: Path, tmp_path: Path) -> None:
    frame = _csv(cohort_60)
    column = "cxr_path"
    row = int(frame[column].notna().to_numpy().argmax())
    frame.loc[row, column] = "../../outside.dcm"
    cohort = Cohort.from_frame(frame, cohort_60)
    with pytest.raises(SpecError) as raised:
        pipelines.train(cohort, TINY, out=tmp_path / "model", device="cpu")
    assert [(p.row, p.column) for p in raised.value.problems] == [(row + 1, column)]
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_training_a_frame_cohort_equals_training_its_files(cohort_60: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(cohort_60.parent / "cohort.csv", dtype=str, keep_default_na=False)
    bundle = pipelines.train(Cohort.from_frame(frame, cohort_60), TINY, out=tmp_path / "frame", device="cpu")
    train_to_folder(cohort_60, tmp_path / "files", TINY, device="cpu", progress=False)
    ours, theirs = (load_file(str(f / "weights.safetensors")) for f in (bundle.path, tmp_path / "files"))
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)
    assert bundle.metrics == json.loads((tmp_path / "files" / "metrics.json").read_text())


def test_predict_proba_and_predict_match_the_prediction_table(bundle, cohort_60: Path) -> None:
    cohort = load_cohort(cohort_60)
    table = bundle.predictions(cohort)
    probabilities = bundle.predict_proba(cohort_60)
    labels = bundle.predict(cohort)
    assert list(probabilities.columns) == bundle.classes
    assert list(probabilities.index) == cohort.ids == list(labels.index)
    assert probabilities.index.name == cohort.spec.id
    ok = (table["status"] == "ok").to_numpy()
    assert ok.any()
    np.testing.assert_allclose(probabilities.to_numpy()[ok].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities[bundle.classes[1]].to_numpy()[ok], table["risk"][ok], atol=1e-12)
    assert labels[ok].tolist() == table["label"][ok].astype(str).tolist()
    positive = probabilities[bundle.classes[1]].to_numpy()[ok] >= bundle.threshold
    assert (labels[ok] == bundle.classes[1]).tolist() == positive.tolist()


def test_predict_proba_refuses_a_frame_without_a_model_column(bundle, cohort_60: Path) -> None:
    frame = _csv(cohort_60).drop(columns=["lactate"])
    with pytest.raises(SpecError, match="lactate"):
        bundle.predict_proba(Cohort.from_frame(frame, cohort_60))


def test_evaluate_is_the_calibrated_evaluation_of_the_prediction_table(bundle, cohort_60: Path) -> None:
    cohort = load_cohort(cohort_60)
    table = predict_table(bundle, cohort)
    ours = bundle.evaluate(cohort, split=None, n_boot=20)
    theirs = evaluate_predictions(
        table,
        cohort,
        temperature=bundle.temperature,
        threshold=bundle.threshold,
        logit_shift=bundle.logit_shift,
        split=None,
        n_boot=20,
    )
    assert ours.to_dict() == theirs.to_dict()
    assert ours.temperature == bundle.temperature
    assert bundle.evaluate(cohort, predictions=table, split=None, n_boot=20).to_dict() == ours.to_dict()


def test_explain_one_patient_of_a_frame(bundle, cohort_60: Path) -> None:
    cohort = Cohort.from_frame(_csv(cohort_60), cohort_60)
    patient = cohort.ids[2]
    explanation = bundle.explain(cohort, patient, steps=4)
    assert explanation.prediction.patient_id == patient
    assert set(explanation.shapley) == set(bundle.spec.modalities)
    absent = [m for m, flag in explanation.prediction.modality_present.items() if not flag]
    assert all(explanation.shapley[m] == 0.0 for m in absent)
    with pytest.raises(UnknownPatient):
        bundle.explain(cohort, "nobody")
