"""A gradient-boosting teacher for DeepWe: each training patient's class probabilities from trees that
never saw that patient, which the network then learns from beside the labels (distillation, Hinton
et al. 2015; the loss term ``lambda_teacher``).

Trees on named numbers are strong on cohorts of a few thousand patients, and they err on other
patients than the network does. The teacher reads each modality's numbers from its encoder: the
values and statistics that the scalar tokens embed (tabular variables, each series channel;
:meth:`encoders.base.ModalityEncoder.scalar_features`) and summaries of each file (a waveform's beat
intervals, a sound's band powers, an image's intensities and thumbnail, a note's hashed word counts;
:mod:`encoders.summaries`, the numbers the benchmarks' gradient-boosting baseline reads). A cohort
with a modality that gives none gets no teacher: one blind to part of the patient would teach the
network to ignore that part.
Its probabilities are cross-fitted: the training patients are cut into :data:`FOLDS` stratified
folds and each fold is predicted by trees fitted on the others, so a patient's soft target carries
no more of its own label than a new patient's would. Only the training split is read: the validation
split, which early stopping and calibration use, is never shown to the teacher. The folds' fitted
trees can stay in the model as its tree evidence (:mod:`deepwe_mm.tree_evidence`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from deepwe_mm.tree_evidence import TreeArrays
from encoders.base import summary_matrix
from pipelines.bundles.model_builder import build_encoders
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import PreparedCohort
from pipelines.evaluation.metrics import auroc

log = logging.getLogger("deepwe.train")

FOLDS = 5
# Histogram gradient boosting with early stopping on an inner 15% of each fit: settings that do well
# on clinical cohorts of a few thousand rows without tuning (a small learning rate, many trees).
MIN_LEAF = 20  # scikit-learn's default min_samples_leaf
BOOSTING = {
    "min_samples_leaf": MIN_LEAF,
    "learning_rate": 0.05,
    "max_iter": 500,
    "early_stopping": True,
    "validation_fraction": 0.15,
    "n_iter_no_change": 30,
}


@dataclass(frozen=True)
class Teacher:
    """The teacher's cross-fitted class probabilities of the training patients.

    Attributes:
        probabilities: (N_train, C) float32, row i for position i of the training dataset.
        features: how many scalar features the trees read.
        auroc: the cross-fitted probabilities' AUROC on the training labels (binary; None otherwise).
        seconds: wall-clock seconds to read the features and fit the trees.
        trees: the folds' fitted trees as node arrays, with each modality's feature count (None
            when none could be fitted).
    """

    probabilities: torch.Tensor
    features: int
    auroc: float | None
    seconds: float
    trees: TreeArrays | None = None

    def targets(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, C) probabilities of the batch's training-dataset positions ``indices`` (B,), on
        their device (only the batch's rows are moved)."""
        return self.probabilities[indices.cpu()].to(indices.device)

    def describe(self) -> str:
        """One line for the training log."""
        score = "" if self.auroc is None else f": cross-fitted training AUROC {self.auroc:.4f}"
        return f"gradient-boosting teacher on {self.features} scalar features{score} ({self.seconds:.0f} s)"

    def summary(self) -> dict[str, Any]:
        """What metrics.json records of the teacher (no timings: the same training gives the same
        metrics)."""
        return {
            "kind": "gradient boosting",
            "folds": FOLDS,
            "features": self.features,
            "cross_fitted_train_auroc": self.auroc,
        }


def fit_teacher(
    prepared: PreparedCohort, settings: dict[str, Any], batch_size: int, seed: int
) -> Teacher | None:
    """Cross-fitted teacher probabilities of ``prepared``'s training patients, or None (with the
    reason logged) when a modality has no scalar features (the trees would not see it) or a class
    has fewer than :data:`FOLDS` training patients.

    Args:
        settings: the encoders' settings (``config.json``'s ``encoders``), to collate with.
        batch_size: patients per collated batch while reading the features.
    """
    started = time.perf_counter()
    read = training_features(prepared, settings, batch_size)
    if read is None:
        return None
    features, widths = read
    labels = prepared.labels[prepared.splits == "train"]
    counts = np.bincount(labels, minlength=len(prepared.classes))
    if counts.min() < FOLDS:
        log.info(
            "no gradient-boosting teacher: a class has %d training patients, fewer than its %d folds",
            counts.min(),
            FOLDS,
        )
        return None
    probabilities, trees = cross_fitted_probabilities(features, labels, len(prepared.classes), seed)
    if trees is not None:
        trees = dataclasses.replace(trees, blocks=widths)
    score = float(auroc(labels, probabilities[:, 1])) if len(prepared.classes) == 2 else None
    teacher = Teacher(
        torch.from_numpy(probabilities.astype(np.float32)),
        features.shape[1],
        score,
        time.perf_counter() - started,
        trees,
    )
    log.info("%s", teacher.describe())
    return teacher


def training_features(
    prepared: PreparedCohort, settings: dict[str, Any], batch_size: int
) -> tuple[np.ndarray, dict[str, int]] | None:
    """(N_train, F) float64 scalar features of the training patients in dataset order (NaN where
    not observed or the modality is missing) and how many of them each modality gives, in order; or
    None (logged) when a modality has none.

    Each modality gives its encoder's numbers, per collated batch (:meth:`ModalityEncoder.scalar_features`:
    tabular values, series statistics) or per file (:meth:`ModalityEncoder.sample_summary`: waveforms,
    sounds, images, notes)."""
    encoders = build_encoders(settings)
    sources = {name: encoder.feature_source() for name, encoder in encoders.items()}
    without = [name for name, source in sources.items() if source is None]
    if without:
        log.info(
            "no gradient-boosting teacher: it would not see %s (no scalar features), and a teacher "
            "blind to part of the patient would teach the model to ignore that part",
            ", ".join(without),
        )
        return None
    # Only the modalities read per batch are collated: collating the others would embed notes and
    # resize images for nothing.
    collate = PatientCollator({name: encoders[name] for name, source in sources.items() if source == "batch"})
    loader = DataLoader(
        prepared.dataset("train"),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=lambda samples: (collate(samples), samples),
    )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    summaries: dict[str, list[dict[str, float] | None]] = {name: [] for name in encoders}
    for batch, samples in loader:
        for name, encoder in encoders.items():
            if sources[name] == "batch":
                columns[name].append(encoder.scalar_features(batch.inputs[name]).double().numpy())
            else:
                summaries[name] += [
                    None if s.inputs[name] is None else encoder.sample_summary(s.inputs[name])
                    for s in samples
                ]
    blocks = {
        name: np.concatenate(columns[name]) if sources[name] == "batch" else summary_matrix(summaries[name])
        for name in encoders
    }
    return np.concatenate(list(blocks.values()), axis=1), {name: b.shape[1] for name, b in blocks.items()}


def cross_fitted_probabilities(
    features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int
) -> tuple[np.ndarray, TreeArrays | None]:
    """(N, C) probabilities, each row from trees fitted on the other :data:`FOLDS` − 1 folds, and
    the folds' fitted trees as node arrays (None when no fold had a feature to split on).

    Args:
        features: (N, F) float, NaN allowed; labels: (N,) class indices in [0, C), every class
            with at least :data:`FOLDS` rows.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    probabilities = np.zeros((len(labels), n_classes))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    fitted = []
    # The trees get as many OpenMP threads as torch has (which training keeps to the free cores):
    # on 2 cores with one kept busy by another process, two threads took 76-95 s and one 6 s.
    with threadpool_limits(limits=torch.get_num_threads(), user_api="openmp"):
        for fit_rows, held_out in folds.split(features, labels):
            # A tree leaf holds at least MIN_LEAF patients, so a feature observed in fewer fit rows
            # can never be split on; leaving it out changes no tree, and spares the trees a feature
            # that their inner early-stopping split may leave without a single value (an error).
            usable = (~np.isnan(features[fit_rows])).sum(0) >= MIN_LEAF
            if not usable.any():
                shares = np.bincount(labels[fit_rows], minlength=n_classes) / len(fit_rows)
                probabilities[held_out] = shares
                continue
            trees = HistGradientBoostingClassifier(random_state=seed, **BOOSTING)
            trees.fit(features[np.ix_(fit_rows, usable)], labels[fit_rows])
            predicted = trees.predict_proba(features[np.ix_(held_out, usable)])
            probabilities[np.ix_(held_out, trees.classes_)] = predicted
            fitted.append((trees, np.flatnonzero(usable)))
    arrays = tree_arrays(fitted, features.shape[1], n_classes) if len(fitted) == FOLDS else None
    return probabilities, arrays


def tree_arrays(fitted: list[tuple[Any, np.ndarray]], n_features: int, n_classes: int) -> TreeArrays:
    """Fitted ``HistGradientBoostingClassifier`` s (each with the feature columns it read) as flat
    node arrays, every split node holding the count-weighted mean score of its leaves.

    Every fit must have seen every class (cross-fitting with at least :data:`FOLDS` patients per
    class guarantees it), so that their raw scores line up output by output."""
    parts: dict[str, list[np.ndarray]] = {
        key: []
        for key in (
            "feature",
            "threshold",
            "missing_left",
            "left",
            "right",
            "value",
            "roots",
            "output",
            "fit",
        )
    }
    baselines, depth, offset = [], 0, 0
    for fit, (trees, columns) in enumerate(fitted):
        if len(trees.classes_) != n_classes:
            raise ValueError(f"fit {fit} saw {len(trees.classes_)} of {n_classes} classes")
        baselines.append(np.asarray(trees._baseline_prediction, dtype=np.float64).reshape(-1))
        for per_output in trees._predictors:
            for output, predictor in enumerate(per_output):
                nodes = _flat_nodes(predictor.nodes, columns)
                for key in ("feature", "threshold", "missing_left", "value"):
                    parts[key].append(nodes[key])
                parts["left"].append(nodes["left"] + offset)
                parts["right"].append(nodes["right"] + offset)
                parts["roots"].append(np.array([offset]))
                parts["output"].append(np.array([output]))
                parts["fit"].append(np.array([fit]))
                depth = max(depth, nodes["depth"])
                offset += len(nodes["value"])
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    return TreeArrays(
        **arrays, baseline=np.stack(baselines), features=n_features, classes=n_classes, depth=depth
    )


def _flat_nodes(nodes: np.ndarray, columns: np.ndarray) -> dict[str, Any]:
    """One scikit-learn tree's node records as arrays: features mapped to ``columns``, leaves
    pointing to themselves, and every split holding the count-weighted mean of its children's
    scores (its expected score), plus the deepest leaf's ``depth``."""
    leaf = nodes["is_leaf"].astype(bool)
    own = np.arange(len(nodes))
    left = np.where(leaf, own, nodes["left"].astype(np.int64))
    right = np.where(leaf, own, nodes["right"].astype(np.int64))
    value = np.where(leaf, nodes["value"], 0.0)
    count = nodes["count"].astype(np.float64)
    for i in range(len(nodes) - 1, -1, -1):  # children come after their parent
        if not leaf[i]:
            low, high = left[i], right[i]
            value[i] = (count[low] * value[low] + count[high] * value[high]) / (count[low] + count[high])
    return {
        "feature": np.where(leaf, 0, columns[nodes["feature_idx"]]),
        "threshold": np.where(leaf, 0.0, nodes["num_threshold"]),
        "missing_left": nodes["missing_go_to_left"].astype(bool),
        "left": left,
        "right": right,
        "value": value,
        "depth": int(nodes["depth"][leaf].max()),
    }
