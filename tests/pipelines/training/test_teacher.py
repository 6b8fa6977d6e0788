"""The gradient-boosting teacher: cross-fitted (no patient's probability from trees that saw it),
read from the training split only, and recorded in the bundle's metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import yaml

from encoders.base import ModalityEncoder
from encoders.image import ImageEncoder, ImageEncoderConfig
from encoders.summaries import image_summary
from encoders.tabular import TabularEncoder, TabularEncoderConfig
from pipelines.evaluation.metrics import auroc
from pipelines.training.teacher import BOOSTING, FOLDS, cross_fitted_probabilities
from pipelines.training.train import train
from tests.pipelines.conftest import TINY


def test_a_patient_is_never_predicted_by_trees_that_saw_its_label() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    # Each patient's own number and noise labels: trees that saw a patient can recall its label,
    # trees that did not can only guess.
    features = rng.permutation(400).astype(float)[:, None]
    probabilities, _ = cross_fitted_probabilities(features, labels, 2, seed=0)
    from sklearn.ensemble import HistGradientBoostingClassifier

    recalled = HistGradientBoostingClassifier(random_state=0, **(BOOSTING | {"early_stopping": False}))
    recalled.fit(features, labels)
    assert auroc(labels, recalled.predict_proba(features)[:, 1]) > 0.8
    assert abs(auroc(labels, probabilities[:, 1]) - 0.5) < 0.1


def test_cross_fitted_probabilities_carry_a_real_signal_for_every_class() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 4))
    features[rng.random((600, 4)) < 0.2] = np.nan  # missing values are allowed
    labels = np.digitize(np.nan_to_num(features[:, 0]) + 0.3 * rng.normal(size=600), [-0.5, 0.5])
    probabilities, _ = cross_fitted_probabilities(features, labels, 3, seed=0)
    assert probabilities.shape == (600, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    observed = ~np.isnan(features[:, 0])
    accuracy = (probabilities.argmax(1) == labels)[observed].mean()
    assert accuracy > 0.7


def _keep_modalities(folder, names: list[str]) -> dict:
    """Cut the cohort in ``folder`` to the modalities ``names`` (and the rows that have one)."""
    spec_path = folder / "cohort.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["modalities"] = {m: spec["modalities"][m] for m in names}
    spec_path.write_text(yaml.safe_dump(spec))
    if "labs" not in names:  # every row has labs; without them keep the rows that have a file
        table = pd.read_csv(folder / spec["table"])
        columns = [spec["modalities"][m]["column"] for m in names]
        table[table[columns].notna().any(axis=1)].to_csv(folder / spec["table"], index=False)
    return spec


def test_features_too_rare_to_split_on_are_left_out_not_an_error() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 60)
    signal = labels + rng.normal(scale=0.5, size=60)
    rare = np.full(60, np.nan)
    rare[:3] = 1.0  # observed in 3 patients: no leaf of 20 can split on it
    features = np.c_[signal, rare, np.full(60, np.nan)]
    probabilities, _ = cross_fitted_probabilities(features, labels, 2, seed=0)
    assert np.isfinite(probabilities).all() and auroc(labels, probabilities[:, 1]) > 0.7
    nothing, _ = cross_fitted_probabilities(features[:, 1:], labels, 2, seed=0)
    # No usable feature: each fold gets its fit rows' class shares.
    assert np.allclose(nothing.sum(1), 1.0) and np.ptp(nothing[:, 1]) < 0.1


def test_training_learns_from_a_teacher_fitted_on_the_training_split_only(cohort_copy, tmp_path) -> None:
    spec_path = cohort_copy / "cohort.yaml"
    spec = _keep_modalities(cohort_copy, ["labs", "vitals"])
    taught = train(spec_path, tmp_path / "taught", TINY, device="cpu", progress=False)
    teacher = taught.metrics["teacher"]
    assert teacher["kind"] == "gradient boosting" and teacher["folds"] == FOLDS
    assert teacher["features"] == len(spec["modalities"]["labs"]["numeric"]) + len(
        spec["modalities"]["labs"].get("categorical", [])
    ) + _statistic_count(taught)
    assert 0.0 <= teacher["cross_fitted_train_auroc"] <= 1.0
    card = (tmp_path / "taught" / "model_card.md").read_text()
    assert "learnt from a gradient-boosting teacher" in card and "other 4 of 5 folds" in card

    # Validation and test labels changed: the teacher, fitted on the training split alone, must not
    # notice.
    table_path = cohort_copy / spec["table"]
    table = pd.read_csv(table_path)
    outcome, split = spec["outcome"]["column"], spec["split"]["column"]
    held_out = table[split] != "train"
    values = sorted(table[outcome].dropna().unique())
    table.loc[held_out, outcome] = [
        values[0] if v == values[1] else values[1] for v in table.loc[held_out, outcome]
    ]
    table.to_csv(table_path, index=False)
    flipped = train(spec_path, tmp_path / "flipped", TINY, device="cpu", progress=False)
    assert flipped.metrics["teacher"]["cross_fitted_train_auroc"] == teacher["cross_fitted_train_auroc"]

    untaught_config = dataclasses.replace(TINY, fusion={**TINY.fusion, "lambda_teacher": 0.0})
    untaught = train(spec_path, tmp_path / "untaught", untaught_config, device="cpu", progress=False)
    assert "teacher" not in untaught.metrics


def _statistic_count(result) -> int:
    """Scalar features of the bundle's series statistics (0 when its series are not read as statistics)."""
    import json

    config = json.loads((result.bundle / "config.json").read_text())
    count = 0
    for settings in config["encoders"].values():
        fields = settings["config"]
        if settings["encoder"].startswith("sensor") and fields.get("tokens") == "variables":
            from encoders.series_statistics import SERIES_STATISTICS

            count += fields["channels"] * len(SERIES_STATISTICS)
    return count


@pytest.mark.parametrize("lambda_teacher", [-0.5])
def test_a_negative_teacher_weight_is_refused(lambda_teacher) -> None:
    from deepwe_mm import DeepWeConfig

    with pytest.raises(ValueError, match="lambda_teacher must be >= 0"):
        DeepWeConfig(modality_dims={"labs": 8}, lambda_teacher=lambda_teacher)


def test_every_file_modality_gives_the_teacher_its_summaries(cohort_copy, tmp_path) -> None:
    """Trees read the chest X-ray's intensities and thumbnail beside the labs (26 numbers a file),
    so the teacher sees every modality of a labs + image cohort."""
    spec = _keep_modalities(cohort_copy, ["labs", "cxr"])
    config = dataclasses.replace(TINY, epochs=1)
    result = train(cohort_copy / "cohort.yaml", tmp_path / "model", config, device="cpu", progress=False)
    labs = spec["modalities"]["labs"]
    image_numbers = len(image_summary(np.zeros((1, 8, 8), dtype=np.float32)))
    assert image_numbers == 26
    assert (
        result.metrics["teacher"]["features"]
        == len(labs["numeric"]) + len(labs.get("categorical", [])) + image_numbers
    )
    assert "gradient-boosting teacher" in (tmp_path / "model" / "model_card.md").read_text()


class _ImageWithoutSummaries(ImageEncoder):
    """An image encoder (a user's own, say) that gives trees no numbers."""

    sample_summary = ModalityEncoder.sample_summary


def test_no_teacher_for_a_modality_whose_encoder_gives_no_numbers() -> None:
    """A teacher blind to part of the patient would teach the model to ignore that part."""
    config = ImageEncoderConfig(out_dim=8, image_size=32)
    assert _ImageWithoutSummaries(config).feature_source() is None
    assert ImageEncoder(config).feature_source() == "sample"
    tabular = TabularEncoder(TabularEncoderConfig(numeric=("age",), categorical=(), categories=(), out_dim=8))
    assert tabular.feature_source() == "batch"
