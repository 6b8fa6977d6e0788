"""Tree evidence: the teacher's fitted trees evaluated in torch give scikit-learn's scores, split
exactly into per-feature contributions, get a weight chosen on validation, and travel in the bundle."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from deepwe_mm import DeepWe, DeepWeConfig
from deepwe_mm.tree_evidence import TreeEvidence, TreeShape
from pipelines.api import load_bundle
from pipelines.bundles.model_builder import MultimodalModel, build_encoders
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import prepare_cohort
from pipelines.explanations.attribution_targets import target_for
from pipelines.explanations.explaining import explain_patient, read_patient
from pipelines.explanations.patient_scorer import PatientScorer, copies
from pipelines.reports.modality_effects import modality_effects
from pipelines.training.calibrate import TREE_WEIGHTS, best_tree_weight
from pipelines.training.model_settings import encoder_settings
from pipelines.training.teacher import BOOSTING, training_features, tree_arrays
from pipelines.training.train import train
from tests.pipelines.conftest import TINY
from tests.pipelines.training.test_teacher import _keep_modalities


def _data(classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(600, 6))
    features[rng.random(features.shape) < 0.2] = np.nan
    filled = np.nan_to_num(features)
    signal = filled[:, 0] + filled[:, 1] * filled[:, 2] + 0.5 * rng.normal(size=600)
    return features, np.digitize(signal, [0.0] if classes == 2 else [-0.5, 0.5])


def _fit(features: np.ndarray, labels: np.ndarray, columns: np.ndarray, seed: int):
    trees = HistGradientBoostingClassifier(random_state=seed, **BOOSTING)
    return trees.fit(features[:, columns], labels), columns


@pytest.mark.parametrize("classes", [2, 3])
def test_the_trees_in_torch_give_scikit_learns_probabilities(classes) -> None:
    features, labels = _data(classes)
    # One fit reads a subset of the columns (as a fold does when a feature is too rare there).
    columns = np.array([0, 1, 2, 3, 5])
    trees, _ = _fit(features, labels, columns, seed=0)
    evidence = TreeEvidence.from_arrays(tree_arrays([(trees, columns)], 6, classes))
    probabilities = torch.softmax(evidence.log_odds(torch.from_numpy(features)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, trees.predict_proba(features[:, columns]), atol=1e-12)


def test_several_fits_are_averaged_in_log_odds() -> None:
    features, labels = _data(2)
    fitted = [_fit(features[k::2], labels[k::2], np.arange(6), seed=k) for k in range(2)]
    evidence = TreeEvidence.from_arrays(tree_arrays(fitted, 6, 2))
    log_odds = evidence.log_odds(torch.from_numpy(features)).numpy()

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p / (1 - p))

    expected = np.mean([logit(trees.predict_proba(features)[:, 1]) for trees, _ in fitted], axis=0)
    np.testing.assert_allclose(log_odds[:, 1], expected, atol=1e-9)
    assert np.all(log_odds[:, 0] == 0.0)  # binary: the negative class stays at 0


@pytest.mark.parametrize("classes", [2, 3])
def test_the_contributions_add_up_to_the_log_odds_and_unread_features_get_none(classes) -> None:
    features, labels = _data(classes)
    features[:, 4] = 0.0  # a constant: no tree can split on it
    evidence = TreeEvidence.from_arrays(tree_arrays([_fit(features, labels, np.arange(6), 0)], 6, classes))
    x = torch.from_numpy(features)
    bias, per_feature = evidence.contributions(x)
    assert per_feature.shape == (600, 6, classes)
    torch.testing.assert_close(bias + per_feature.sum(1), evidence.log_odds(x), atol=1e-9, rtol=0)
    assert torch.all(per_feature[:, 4] == 0)
    assert torch.all(bias == bias[0])  # the bias is the same for every patient
    # The signal sits in features 0-2: they carry most of the trees' spread, noise 3 and 5 little.
    spread = per_feature.abs().mean((0, 2))
    assert spread[:3].min() > spread[[3, 5]].max()


def test_the_tree_weight_grows_with_what_the_trees_add_and_is_zero_for_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 2000
    known = torch.randn(n, generator=generator)
    hidden = torch.randn(n, generator=generator)
    labels = (torch.rand(n, generator=generator) < torch.sigmoid(known + hidden)).long()

    def logits(score: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(score), score], dim=1)

    network = logits(known)
    weight, losses = best_tree_weight(network, logits(hidden).double(), labels)
    assert 0.5 <= weight <= 1.5 and losses[TREE_WEIGHTS.index(weight)] < losses[0]
    noise = logits(3 * torch.randn(n, generator=generator))
    assert best_tree_weight(network, noise, labels)[0] == 0.0


@pytest.fixture(scope="module")
def labs_and_vitals(cohort_60, tmp_path_factory):
    """(spec path, training result) of a model on ``cohort_60``'s labs and vitals (both give their
    scalar features per batch, so the model keeps its trees)."""
    folder = tmp_path_factory.mktemp("trees") / "cohort"
    shutil.copytree(cohort_60.parent, folder)
    _keep_modalities(folder, ["labs", "vitals"])
    result = train(folder / "cohort.yaml", folder.parent / "model", TINY, device="cpu", progress=False)
    return folder / "cohort.yaml", result


def test_the_bundle_carries_the_trees_and_prediction_adds_their_weighted_log_odds(
    labs_and_vitals, tmp_path
) -> None:
    spec_path, result = labs_and_vitals
    recorded = result.metrics["tree_evidence"]
    assert recorded["weight"] in TREE_WEIGHTS and recorded["folds"] == 5
    assert recorded["features"] == result.metrics["teacher"]["features"]
    assert recorded["val_log_loss"] <= recorded["val_log_loss_without"]
    assert set(recorded["network_alone"]) == {"val", "test"}
    config = json.loads((result.bundle / "config.json").read_text())
    assert config["trees"]["trees"] == recorded["trees"] and config["fusion"]["tree_evidence"] is True
    calibration = json.loads((result.bundle / "calibration.json").read_text())
    assert calibration["tree_weight"] == recorded["weight"]

    model = load_bundle(result.bundle).model
    assert model.trees is not None and float(model.trees.weight) == recorded["weight"]
    dataset = prepare_cohort(load_cohort(spec_path)).dataset()
    batch = PatientCollator(model.encoders)([dataset[i] for i in range(8)])
    model.trees.weight.fill_(1.5)
    with torch.no_grad():
        network = model.core(*model.tokens(batch)).logits
        trees = model.trees.log_odds(model.scalar_features(batch)).float()
        torch.testing.assert_close(model(batch).logits, network + 1.5 * trees)

    off = dataclasses.replace(TINY, fusion={**TINY.fusion, "tree_evidence": False})
    without = train(spec_path, tmp_path / "without", off, device="cpu", progress=False)
    assert "tree_evidence" not in without.metrics and "teacher" in without.metrics
    assert "trees" not in json.loads((tmp_path / "without" / "config.json").read_text())
    assert load_bundle(tmp_path / "without").model.trees is None


def test_explanations_add_the_trees_path_contributions_to_the_network_attributions(labs_and_vitals) -> None:
    spec_path, result = labs_and_vitals
    bundle, cohort = load_bundle(result.bundle), load_cohort(spec_path)
    # Sixty patients are too few for the teacher's trees to split (a leaf holds 20): fit deeper
    # ones on the same features, so that the explanation has paths to follow.
    prepared = prepare_cohort(cohort)
    batch = PatientCollator(bundle.model.encoders)(
        [prepared.dataset()[i] for i in range(len(prepared.labels))]
    )
    with torch.no_grad():
        features = bundle.model.scalar_features(batch).double().numpy()
    columns = np.flatnonzero((~np.isnan(features)).sum(0) >= 3)
    deep = HistGradientBoostingClassifier(min_samples_leaf=3, max_iter=20, early_stopping=False)
    deep.fit(features[:, columns], prepared.labels)
    bundle.model.trees = TreeEvidence.from_arrays(tree_arrays([(deep, columns)], features.shape[1], 2))
    patient = str(cohort.table[cohort.spec.id].iloc[0])
    bundle.model.trees.weight.zero_()
    network = explain_patient(bundle, cohort, patient, steps=16)
    bundle.model.trees.weight.fill_(1.5)  # trees that matter, whatever validation chose here
    both = explain_patient(bundle, cohort, patient, steps=16)
    # The explained score is the prediction's own calibrated log-odds, trees included.
    risk = both.prediction.risk
    assert both.score == pytest.approx(math.log(risk / (1 - risk)), abs=1e-4)
    assert both.score != pytest.approx(network.score, abs=1e-3)
    assert network.tree_score is None and both.to_dict()["score"]["tree_evidence"] == both.tree_score
    assert both.score - both.tree_score == pytest.approx(network.score, abs=1e-4)
    # Shapley values of the modalities still add up to the risk, trees included, here and in the
    # cohort-wide modality effects of the audit report.
    assert sum(both.shapley.values()) == pytest.approx(risk - both.base_value, abs=1e-5)
    effects = modality_effects(bundle, cohort, [0])
    assert effects.risk[0] == pytest.approx(risk, abs=1e-5)
    assert effects.shapley[0] == pytest.approx([both.shapley[m] for m in effects.modalities], abs=1e-5)
    moved = 0.0
    for name, item in both.modalities.items():
        scorer = PatientScorer(bundle, read_patient(bundle, cohort, 0)[1], 1)
        target = target_for(bundle, name, scorer.batch.inputs[name], len(item.tokens))
        baseline = copies(scorer.batch.inputs[name], 1, **{target.key: target.baseline})
        trees = scorer.tree_attribution(name, baseline)[: int(target.input_tokens.max()) + 1]
        extra = item.token_attribution - network.modalities[name].token_attribution
        if item.kind == "tabular":  # categorical values are occluded: their change is the trees' too
            extra = extra[: len(trees)]
        torch.testing.assert_close(extra[: len(trees)], trees, atol=1e-4, rtol=1e-4)
        assert torch.all(extra[len(trees) :].abs() < 1e-4)
        moved += float(trees.abs().sum())
    assert moved > 0


def test_an_ensemble_bundle_with_trees_round_trips(cohort_copy, tmp_path) -> None:
    spec_path = cohort_copy / "cohort.yaml"
    _keep_modalities(cohort_copy, ["labs", "vitals"])
    config = dataclasses.replace(TINY, ensemble=2)
    result = train(spec_path, tmp_path / "model", config, device="cpu", progress=False)
    assert all("tree_weight" in member for member in result.metrics["members"])
    bundle = load_bundle(tmp_path / "model")
    assert bundle.model.trees is not None
    assert float(bundle.model.trees.weight) == result.metrics["tree_evidence"]["weight"]


def test_the_model_reads_the_numbers_its_teacher_was_fitted_on_for_every_modality(cohort_60) -> None:
    """Per-batch numbers (labs, vitals statistics) and per-file summaries (notes, images, sounds,
    waveforms) reach the trees in the model exactly as they reached the teacher."""
    prepared = prepare_cohort(load_cohort(cohort_60))
    settings = encoder_settings(prepared.cohort.spec, prepared.preprocessing, TINY)
    features, widths = training_features(prepared, settings, batch_size=16)
    assert list(widths) == list(prepared.cohort.spec.modalities) and sum(widths.values()) == features.shape[1]
    encoders = build_encoders(settings)
    model = MultimodalModel(encoders, DeepWe(DeepWeConfig({n: e.out_dim for n, e in encoders.items()})))
    shape = TreeShape(
        nodes=1, trees=1, fits=1, features=features.shape[1], outputs=1, classes=2, depth=0, blocks=widths
    )
    model.attach_trees(TreeEvidence(shape))
    dataset = prepared.dataset("train")
    batch = PatientCollator(model.encoders)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        read = model.scalar_features(batch).double().numpy()
    np.testing.assert_array_equal(read, features)  # NaN where the teacher had NaN
    model.attach_trees(None)
    assert all(encoder.summary_width is None for encoder in model.encoders.values())
