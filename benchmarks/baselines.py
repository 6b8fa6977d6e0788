"""What the benchmark parts share: the baselines on summary features (gradient boosting, logistic
regression, a severity score), the cohorts they compare on (PhysioNet 2012 set A, a ``deepwe synth``
cohort, one modality of it), DeepWe's training run and the synthetic generator's oracle.

Every cohort made here is held in memory (:meth:`pipelines.cohorts.cohort_table.Cohort.from_frame`): changing a
split or keeping one modality writes nothing to disk.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.unimodal import subset
from pipelines.api import checked_cohort
from pipelines.cohorts.cohort_table import Cohort
from pipelines.evaluation.metrics import auroc
from pipelines.sources.importers import import_dataset
from pipelines.sources.synth import generate_cohort
from pipelines.training.train import TrainResult, train
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.bench.baselines")

P12_OUTCOME = "In-hospital_death"
SAPS = "SAPS-I"
SPLIT = "split"
GB = "gradient boosting on summary features"
LR_C = (0.01, 0.1, 1.0)

GB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 400,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,
}


@dataclass(frozen=True)
class Fitted:
    """A fitted baseline: its test risk and what was chosen on validation."""

    risk: np.ndarray  # (N_test,)
    seconds: float
    chosen: dict[str, Any]


def fit_gradient_boosting(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], seed: int) -> Fitted:
    """Histogram gradient boosting; the tree count with the lowest validation log-loss.

    Args:
        x: ``"train"``, ``"val"``, ``"test"`` -> ``(N_split, F)`` features (NaN allowed).
        y: the same splits -> ``(N_split,)`` 0/1 labels.
    """
    started = time.perf_counter()
    model = HistGradientBoostingClassifier(**GB_PARAMS, random_state=seed).fit(x["train"], y["train"])
    losses = [binary_log_loss(y["val"], p[:, 1]) for p in model.staged_predict_proba(x["val"])]
    trees = int(np.argmin(losses)) + 1
    # Without early stopping or subsampling the first k trees of a fit are the fit with k trees.
    model = HistGradientBoostingClassifier(**(GB_PARAMS | {"max_iter": trees}), random_state=seed)
    model.fit(x["train"], y["train"])
    seconds = time.perf_counter() - started
    return Fitted(model.predict_proba(x["test"])[:, 1], seconds, {"trees": trees, **GB_PARAMS})


def binary_log_loss(labels: np.ndarray, risk: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 ``labels`` under ``risk``, both ``(N,)``.

    ``sklearn.metrics.log_loss`` for two classes (risks clipped to [eps, 1 - eps] of their dtype),
    without its input validation, which cost seconds over the hundreds of stages of a boosting fit.
    """
    eps = np.finfo(risk.dtype).eps
    chosen = np.where(np.asarray(labels) == 1, risk, 1.0 - risk)
    return float(np.mean(-np.log(np.clip(chosen, eps, 1 - eps))))


def fit_logistic(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> Fitted:
    """Median imputation, standardisation, L2 logistic regression; C with the best validation AUROC."""
    started = time.perf_counter()
    best, best_score, best_c = None, -math.inf, None
    for c in LR_C:
        model = make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=c, max_iter=5000)
        ).fit(x["train"], y["train"])
        score = auroc(y["val"], model.predict_proba(x["val"])[:, 1])
        if best is None or score > best_score:
            best, best_score, best_c = model, score, c
    seconds = time.perf_counter() - started
    return Fitted(best.predict_proba(x["test"])[:, 1], seconds, {"C": best_c, "val_auroc": best_score})


def fit_score(score: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> Fitted:
    """A one-variable logistic fit of a severity score on the training patients (median-imputed)."""
    started = time.perf_counter()
    model = make_pipeline(SimpleImputer(strategy="median"), LogisticRegression(max_iter=1000))
    model.fit(score["train"].reshape(-1, 1), y["train"])
    risk = model.predict_proba(score["test"].reshape(-1, 1))[:, 1]
    missing = int(np.isnan(score["test"]).sum())
    return Fitted(risk, time.perf_counter() - started, {"test_missing_imputed": missing})


def by_split(frame: pd.DataFrame, splits: np.ndarray) -> dict[str, np.ndarray]:
    """``"train"``/``"val"``/``"test"`` -> the rows of ``frame`` in that split, as float64 arrays."""
    return {s: frame.to_numpy(dtype=np.float64)[splits == s] for s in ("train", "val", "test")}


def p12_cohort(data: Path, work: Path, limit: int | None = None, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """Set A as a cohort, imported once into ``work/imports`` (reused after), and its table, cut to
    a stratified, seeded subset of ``limit`` stays when given.

    Raises:
        FileNotFoundError: the PhysioNet 2012 folder is not under ``data``.
    """
    source = data / "physionet2012"
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: the PhysioNet 2012 data is not there (see ../shared/data)")
    spec_path = work / "imports" / "physionet2012" / "cohort.yaml"
    if not spec_path.is_file():
        spec_path = import_dataset("physionet2012", source, spec_path.parent).spec_path
    table = pd.read_csv(spec_path.parent / "cohort.csv", dtype=str, keep_default_na=False)
    if limit is not None:
        table = subset(table, P12_OUTCOME, limit, seed=seed).reset_index(drop=True)
    return spec_path, table


def synthetic_cohort(n: int, folder: Path, missing_rate: float = 0.2) -> Path:
    """``deepwe synth --n n --seed 0 --missing-rate missing_rate`` into ``folder`` (reused when the
    ``ground_truth.json`` there names the same size, seed and missing rate)."""
    truth = folder / "ground_truth.json"
    if truth.is_file():
        known = json.loads(truth.read_text(encoding="utf-8"))
        if (known.get("n"), known.get("seed"), known.get("missing_rate")) == (n, 0, missing_rate):
            return folder / "cohort.yaml"
    started = time.perf_counter()
    result = generate_cohort(folder, n=n, seed=0, missing_rate=missing_rate)
    log.info("synth: generated %d patients in %.0f s", n, time.perf_counter() - started)
    return result.spec_path


def train_deepwe(cohort: Cohort | Path, out: Path, config: TrainConfig) -> TrainResult:
    """DeepWe trained on CPU into ``out`` after the checks of ``deepwe validate``.

    Args:
        cohort: a cohort (in memory or on disk) or its spec path.
    """
    checked = checked_cohort(cohort)
    result = train(checked.spec_path, out, config, device="cpu", progress=False, cohort=checked)
    log.info(
        "  DeepWe %s: test AUROC %.4f, %d epochs (best %d), %.0f s",
        out.name,
        result.metrics["test"]["auroc"],
        result.epochs_run,
        result.metrics["best_epoch"],
        result.seconds,
    )
    return result


def single_modality(cohort: Cohort, table: pd.DataFrame, modality: str) -> Cohort:
    """The cohort keeping one modality, the rows of ``table`` and their ``split`` column (in memory)."""
    spec = cohort.spec.model_copy(update={"modalities": {modality: cohort.spec.modalities[modality]}})
    return Cohort.from_frame(table, spec, root=cohort.folder).split(table[SPLIT].tolist(), column=SPLIT)


@dataclass(frozen=True)
class Oracle:
    """The generator's latent state: per patient id, each modality's component and the log-odds."""

    latent: pd.DataFrame  # (N, M + 1), columns the modalities and "logit"

    @classmethod
    def from_truth(cls, truth: Mapping[str, Any]) -> Oracle:
        rows = {p["patient_id"]: p["latent"] | {"logit": p["logit"]} for p in truth["patients"]}
        return cls(pd.DataFrame.from_dict(rows, orient="index"))

    def anchor(self, labels: pd.Series, patients: np.ndarray, column: str) -> dict[str, Any]:
        """The AUROC of the latent ``column`` on ``patients``: what reading it exactly would give."""
        value = auroc(labels[patients].to_numpy(), self.latent.loc[patients, column].to_numpy())
        what = "log-odds" if column == "logit" else f"{column} component"
        return {
            "value": round(value, 4),
            "source": f"oracle: the generator's latent {what}, same test patients",
        }
