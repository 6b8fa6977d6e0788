"""DeepWe against gradient boosting on summary features, and against each modality.

Part ``p12``, PhysioNet/CinC 2012 set A (in-hospital death). Per split seed, one copy of the imported
cohort gets a seeded, stratified, patient-level 70/15/15 ``split`` column, so every method sees
exactly the same training, validation and test patients:

- DeepWe: ``pipelines.train.train`` on the copy (static tabular + 48 h series), early stopping on
  validation AUROC, temperature scaling on validation.
- gradient boosting (scikit-learn ``HistGradientBoostingClassifier``) on the summary features of
  :mod:`benchmarks.summary_features` (per variable first/last/min/max/mean/count over the 48 h, and
  the static variables); the number of trees is the one with the lowest validation log-loss.
- logistic regression on the same features, median-imputed and standardised; C chosen on validation.
- SAPS-I, the admission severity score shipped with the challenge (no model input), turned into a
  probability by a one-variable logistic fit on the training patients (its AUROC is the raw score's).

Part ``synth``, a ``deepwe synth`` cohort (its generator's own split column): DeepWe on all six
modalities against DeepWe on each modality alone, with the same training settings. A single-modality
copy of the spec keeps only the patients that have that modality (a cohort row needs one), so each
single-modality model is compared with the all-modality model's risks on exactly those test
patients, read back from its bundle. Gradient boosting on the summary features of the same inputs,
and the generator's oracle AUROC (its latent state, which no model sees) frame the figures.

Times are wall-clock seconds on this machine's 2 CPU cores (torch and OpenMP use both), which were
shared with other jobs during the recorded run; the JSON records the load average.

Run from the repository root::

    python -m benchmarks.deepwe_vs_baselines [--quick] [--part p12|synth|all] [--seeds 1] [--synth-n 1500]

Everything it writes goes under ``runs/bench/issue4/`` except the JSON of results
(``benchmarks/results/deepwe_vs_baselines.json`` by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from benchmarks.options import log_to_console, with_overrides
from benchmarks.summary_features import SummaryFeatures, cohort_features
from benchmarks.unimodal import REPO, SHARED_DATA, holdout_split, subset, write_split_cohort
from pipelines.cohort import load_cohort
from pipelines.dataset import PatientCollator
from pipelines.importers import import_dataset
from pipelines.loading import load_bundle
from pipelines.metrics import auroc, binary_metrics
from pipelines.prepare import prepare_cohort
from pipelines.synth import generate_cohort
from pipelines.train import TrainResult, collect_logits, train
from pipelines.train_config import TrainConfig

log = logging.getLogger("deepwe.bench.issue4")

WORK = REPO / "runs" / "bench" / "issue4"
RESULTS = REPO / "benchmarks" / "results" / "deepwe_vs_baselines.json"
P12_TITLE = "PhysioNet 2012 set A (in-hospital death)"
P12_OUTCOME = "In-hospital_death"
SAPS = "SAPS-I"
SPLIT = "split"
METRICS = ("auroc", "auprc", "brier", "ece")
DEEPWE_ALL = "DeepWe, all modalities"
SAME_PATIENTS = "DeepWe, all modalities (same patients)"
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
class Settings:
    """How much to run.

    Attributes:
        seeds: split seeds of part p12 (0, 1, ...); DeepWe trains with the same seed.
        p12_limit: keep at most this many PhysioNet 2012 stays (stratified, seeded), or all.
        p12_epochs, p12_patience: DeepWe training length on PhysioNet 2012.
        synth_n, synth_epochs, synth_patience: size of the synthetic cohort and training length on it.
        batch_size: DeepWe patients per step.
        bootstrap: resamples of the paired bootstrap of the AUROC difference.
    """

    seeds: int = 1
    p12_limit: int | None = None
    p12_epochs: int = 15
    p12_patience: int = 4
    synth_n: int = 1500
    synth_epochs: int = 8
    synth_patience: int = 3
    batch_size: int = 32
    bootstrap: int = 2000

    @classmethod
    def quick(cls) -> Settings:
        """Subsets and one or two epochs: both parts in a few minutes on 2 cores."""
        return cls(p12_limit=400, p12_epochs=2, p12_patience=2, synth_n=150, synth_epochs=1, bootstrap=200)

    def p12_config(self, seed: int, text_cache: Path) -> TrainConfig:
        return TrainConfig(
            epochs=self.p12_epochs,
            patience=self.p12_patience,
            batch_size=self.batch_size,
            lr=1e-3,
            seed=seed,
            token_dim=48,
            encoders={"sensor": {"hidden": 64}},
            fusion={"hidden_dim": 64, "n_heads": 4},
            text_cache=str(text_cache),
        )

    def synth_config(self, text_cache: Path) -> TrainConfig:
        """The encoder and fusion sizes of ``configs/demo.yaml`` (as committed when this benchmark was written), written out
        here so that an edit of the demo settings cannot change this benchmark."""
        return TrainConfig(
            epochs=self.synth_epochs,
            patience=self.synth_patience,
            batch_size=self.batch_size,
            lr=2e-3,
            token_dim=32,
            encoders={
                "image": {"backbone": "test_resnet", "image_size": 64},
                "audio": {"channels": [8, 16, 32], "n_mels": 32},
                "sensor": {"hidden": 32},
            },
            fusion={"hidden_dim": 48, "n_heads": 4},
            text_cache=str(text_cache),
        )


@dataclass(frozen=True)
class Measurement:
    """One method scored on one test set.

    Attributes:
        benchmark: the benchmark as printed (part and, for synth, the inputs).
        method: the method as printed.
        metrics: auroc, auprc, brier, ece (NaN where undefined).
        seconds: wall-clock training time (fit and model selection; not feature extraction).
        n_test: test patients scored.
        seed: split seed (p12) or 0.
        details: anything else worth keeping (epochs, chosen hyperparameters, sizes).
        anchor: the figure to read this one against (``{"value", "source"}``), if any.
    """

    benchmark: str
    method: str
    metrics: dict[str, float]
    seconds: float
    n_test: int
    seed: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    anchor: dict[str, Any] | None = None


# --- Baselines on summary features --------------------------------------------------------------


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


def paired_auroc_difference(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int = 0
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same patients with a paired bootstrap 95% interval.

    Args:
        labels: ``(N,)`` 0/1; a, b: ``(N,)`` risks of the two methods for the same patients.

    Returns:
        ``difference``, ``ci_low``, ``ci_high`` and ``share_a_better`` (of the resamples).
    """
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(labels), len(labels))
        if labels[rows].min() == labels[rows].max():
            continue
        differences.append(auroc(labels[rows], a[rows]) - auroc(labels[rows], b[rows]))
    spread = np.asarray(differences)
    return {
        "difference": auroc(labels, a) - auroc(labels, b),
        "ci_low": float(np.percentile(spread, 2.5)),
        "ci_high": float(np.percentile(spread, 97.5)),
        "share_a_better": float((spread > 0).mean()),
    }


# --- DeepWe --------------------------------------------------------------------------------------


def bundle_risks(result: TrainResult, spec: Path, text_cache: Path, split: str = "test") -> pd.Series:
    """The calibrated positive risk of every patient of ``split``, from the bundle ``train`` wrote.

    A reloaded bundle whose AUROC differs from the one training reported is logged as a warning
    (save/load identity is a project invariant, so it would be a bug).

    Returns:
        ``(N_split,)`` risks indexed by patient id.
    """
    bundle = load_bundle(result.bundle)
    prepared = prepare_cohort(load_cohort(spec), text_cache=str(text_cache))
    dataset = prepared.dataset(split)
    loader = DataLoader(dataset, batch_size=64, collate_fn=PatientCollator(bundle.model.encoders))
    logits, labels = collect_logits(bundle.model, loader, bundle.device)
    risk = torch.softmax(logits / bundle.temperature, dim=1)[:, 1].numpy()
    reported = result.metrics.get(split, {}).get("auroc")
    again = auroc(labels.numpy(), risk)
    if reported is not None and not math.isclose(again, reported, abs_tol=1e-4):
        # Reported, not raised: a long benchmark run should still finish and show the discrepancy.
        log.warning(
            "%s: the reloaded bundle scores %s AUROC %.6f, training reported %.6f",
            result.bundle,
            split,
            again,
            reported,
        )
    return pd.Series(risk, index=[r.patient_id for r in dataset.records], dtype=np.float64)


def train_deepwe(spec: Path, out: Path, config: TrainConfig) -> TrainResult:
    result = train(spec, out, config, device="cpu", progress=False)
    log.info(
        "  DeepWe %s: test AUROC %.4f, %d epochs (best %d), %.0f s",
        out.name,
        result.metrics["test"]["auroc"],
        result.epochs_run,
        result.metrics["best_epoch"],
        result.seconds,
    )
    return result


def _deepwe_details(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    return {
        "epochs_run": result.epochs_run,
        "best_epoch": result.metrics["best_epoch"],
        "split_sizes": result.metrics["split_sizes"],
        "val_auroc": result.metrics["val"]["auroc"],
        "history": result.metrics["history"],
        "train_config": config.to_dict() | {"text_cache": None},
    }


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    return {m: float(values[m]) for m in METRICS}


# --- Part p12 ------------------------------------------------------------------------------------


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


def run_p12(settings: Settings, work: Path, data: Path) -> tuple[list[Measurement], dict[str, Any]]:
    """DeepWe, gradient boosting, logistic regression and SAPS-I on the same splits of set A.

    Returns:
        The measurements and the part's facts (feature extraction time, paired AUROC differences).

    Raises:
        FileNotFoundError: the PhysioNet 2012 folder is absent under ``data``.
    """
    spec_path, table = p12_cohort(data, work, settings.p12_limit)
    labels = table[P12_OUTCOME].astype(int).to_numpy()
    facts: dict[str, Any] = {"patients": len(table), "deaths": int(labels.sum()), "paired": []}
    features: SummaryFeatures | None = None
    measurements: list[Measurement] = []
    for seed in range(settings.seeds):
        split = holdout_split(table[P12_OUTCOME].tolist(), seed)
        spec = write_split_cohort(spec_path, table, split, work / "cohorts" / "p12" / f"seed-{seed}")
        if features is None:  # per-patient summaries: the same for every split
            started = time.perf_counter()
            features = cohort_features(load_cohort(spec))
            facts["feature_seconds"] = round(time.perf_counter() - started, 1)
            facts["features"] = {name: len(cols) for name, cols in features.blocks.items()}
            facts["unreadable_files"] = features.unreadable
            log.info("p12: %d summary features in %.0f s", features.frame.shape[1], facts["feature_seconds"])
        y = {s: labels[split == s] for s in ("train", "val", "test")}
        x = by_split(features.frame.loc[table["RecordID"]], split)
        saps = by_split(table[[SAPS]].replace("", np.nan).astype(np.float64), split)
        saps = {s: v[:, 0] for s, v in saps.items()}
        config = settings.p12_config(seed, work / ".text-cache")
        log.info(
            "p12 seed %d: train %d, val %d, test %d", seed, *(len(y[s]) for s in ("train", "val", "test"))
        )
        result = train_deepwe(spec, work / "models" / "p12" / f"seed-{seed}", config)
        deepwe_risk = bundle_risks(result, spec, work / ".text-cache").loc[table["RecordID"][split == "test"]]
        n_test = len(y["test"])
        measurements.append(
            Measurement(
                P12_TITLE,
                "DeepWe (static tabular + 48 h series)",
                _metrics(result.metrics["test"]),
                result.seconds,
                n_test,
                seed,
                _deepwe_details(result, config),
            )
        )
        baselines = {
            GB: fit_gradient_boosting(x, y, seed),
            "logistic regression on summary features": fit_logistic(x, y),
            "SAPS-I score (logistic recalibration)": fit_score(saps, y),
        }
        for method, fitted in baselines.items():
            metrics = binary_metrics(y["test"], fitted.risk)
            log.info("  %s: test AUROC %.4f, %.1f s", method, metrics["auroc"], fitted.seconds)
            measurements.append(
                Measurement(P12_TITLE, method, _metrics(metrics), fitted.seconds, n_test, seed, fitted.chosen)
            )
        paired = paired_auroc_difference(
            y["test"],
            deepwe_risk.to_numpy(),
            baselines[GB].risk,
            settings.bootstrap,
            seed,
        )
        facts["paired"].append({"seed": seed, "deepwe_minus_gradient_boosting": paired})
        log.info(
            "  DeepWe - GB test AUROC %+.4f [%+.4f, %+.4f]",
            paired["difference"],
            paired["ci_low"],
            paired["ci_high"],
        )
    return measurements, facts


# --- Part synth ----------------------------------------------------------------------------------


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


def write_single_modality(spec_path: Path, table: pd.DataFrame, modality: str, out: Path) -> Path:
    """A copy of the cohort keeping one modality, the rows of ``table`` and their split column."""
    copy = write_split_cohort(spec_path, table, table[SPLIT].tolist(), out)
    spec = yaml.safe_load(copy.read_text(encoding="utf-8"))
    spec["modalities"] = {modality: spec["modalities"][modality]}
    copy.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return copy


def run_synth(settings: Settings, work: Path) -> tuple[list[Measurement], dict[str, Any]]:
    """DeepWe on all modalities against each modality alone, plus gradient boosting and the oracle.

    Returns:
        The measurements and the part's facts (sizes, feature time, paired AUROC differences).
    """
    n = settings.synth_n
    spec_path = synthetic_cohort(n, work / "cohorts" / f"synth-n{n}")
    cohort = load_cohort(spec_path)
    truth = json.loads((spec_path.parent / "ground_truth.json").read_text(encoding="utf-8"))
    oracle = Oracle.from_truth(truth)
    table = pd.read_csv(spec_path.parent / "cohort.csv", dtype=str, keep_default_na=False)
    records = list(cohort.records())
    ids = np.array([r.patient_id for r in records])
    present = pd.DataFrame([r.present() for r in records], index=ids)
    labels = pd.Series([int(r.outcome) for r in records], index=ids)
    split = np.array([r.split for r in records])
    test_ids = ids[split == "test"]
    modalities = list(cohort.spec.modalities)
    cache = work / ".text-cache"
    config = settings.synth_config(cache)
    facts: dict[str, Any] = {
        "n": n,
        "prevalence": truth["prevalence"],
        "missing_rate": truth["missing_rate"],
        "oracle_auroc_all_cohort": truth["oracle_auroc_all"],
        "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "paired": [],
    }
    started = time.perf_counter()
    features = cohort_features(cohort)
    facts["feature_seconds"] = round(time.perf_counter() - started, 1)
    facts["features"] = {name: len(cols) for name, cols in features.blocks.items()}
    log.info("synth: %d summary features in %.0f s", features.frame.shape[1], facts["feature_seconds"])
    measurements: list[Measurement] = []

    def gradient_boosting(columns: list[str], patients: np.ndarray) -> Fitted:
        keep = np.isin(ids, patients)
        frame = features.frame.loc[ids[keep], columns]
        y = {s: labels[ids[keep]].to_numpy()[split[keep] == s] for s in ("train", "val", "test")}
        return fit_gradient_boosting(by_split(frame, split[keep]), y, seed=0)

    def add(
        benchmark: str, method: str, risk: np.ndarray, patients: np.ndarray, seconds: float, **kw
    ) -> None:
        metrics = binary_metrics(labels[patients].to_numpy(), risk)
        measurements.append(
            Measurement(benchmark, method, _metrics(metrics), seconds, len(patients), 0, **kw)
        )

    log.info("synth: DeepWe on all modalities")
    everything = train_deepwe(spec_path, work / "models" / f"synth-n{n}" / "all", config)
    all_risk = bundle_risks(everything, spec_path, cache)
    title = f"synthetic n={n}: all modalities"
    anchor = oracle.anchor(labels, test_ids, "logit")
    details = _deepwe_details(everything, config)
    add(
        title,
        DEEPWE_ALL,
        all_risk[test_ids].to_numpy(),
        test_ids,
        everything.seconds,
        details=details,
        anchor=anchor,
    )
    gb = gradient_boosting(features.columns(modalities), ids)
    add(title, f"{GB} (all modalities)", gb.risk, test_ids, gb.seconds, details=gb.chosen, anchor=anchor)
    for modality in modalities:
        has = ids[present[modality].to_numpy()]
        patients = test_ids[np.isin(test_ids, has)]
        log.info("synth: DeepWe on %s alone (%d of %d patients have it)", modality, len(has), n)
        spec = write_single_modality(
            spec_path,
            table[table["patient_id"].isin(has)],
            modality,
            work / "cohorts" / f"synth-n{n}-{modality}",
        )
        single = train_deepwe(spec, work / "models" / f"synth-n{n}" / modality, config)
        single_risk = bundle_risks(single, spec, cache)[patients].to_numpy()
        title = f"synthetic n={n}: {modality}"
        anchor = oracle.anchor(labels, patients, modality)
        details = _deepwe_details(single, config)
        add(
            title,
            f"DeepWe, {modality} only",
            single_risk,
            patients,
            single.seconds,
            details=details,
            anchor=anchor,
        )
        note = {"note": "the all-modality model's risks on the test patients that have this modality"}
        add(
            title,
            SAME_PATIENTS,
            all_risk[patients].to_numpy(),
            patients,
            everything.seconds,
            details=note,
            anchor=anchor,
        )
        gb = gradient_boosting(features.columns([modality]), has)
        add(title, f"{GB}, {modality} only", gb.risk, patients, gb.seconds, details=gb.chosen, anchor=anchor)
        paired = paired_auroc_difference(
            labels[patients].to_numpy(), all_risk[patients].to_numpy(), single_risk, settings.bootstrap
        )
        facts["paired"].append({"modality": modality, "deepwe_all_minus_deepwe_single": paired})
        log.info(
            "  DeepWe all - DeepWe %s test AUROC %+.4f [%+.4f, %+.4f]",
            modality,
            paired["difference"],
            paired["ci_low"],
            paired["ci_high"],
        )
    return measurements, facts


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


# --- Results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One method on one benchmark over its seeds: mean and sample sd per metric."""

    benchmark: str
    method: str
    runs: tuple[Measurement, ...]

    def values(self, metric: str) -> np.ndarray:
        if metric == "train_seconds":
            return np.array([m.seconds for m in self.runs])
        return np.array([m.metrics[metric] for m in self.runs])

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values(metric)))

    def sd(self, metric: str) -> float | None:
        return float(np.std(self.values(metric), ddof=1)) if len(self.runs) > 1 else None

    def text(self, metric: str, digits: int = 3) -> str:
        sd = self.sd(metric)
        return f"{self.mean(metric):.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")

    def rows(self) -> list[dict[str, Any]]:
        """The JSON rows, one per metric; ``n`` is the test patients of one split."""
        anchor = self.runs[0].anchor
        rows = []
        for metric in (*METRICS, "train_seconds"):
            sd = self.sd(metric)
            rows.append(
                {
                    "benchmark": self.benchmark,
                    "method": self.method,
                    "metric": metric if metric == "train_seconds" else f"test {metric.upper()}",
                    "mean": round(self.mean(metric), 4),
                    "sd": None if sd is None else round(sd, 4),
                    "n": self.runs[0].n_test,
                    "anchor": anchor if metric == "auroc" else None,
                    "details": {
                        "seeds": [m.seed for m in self.runs],
                        "per_seed": [round(float(v), 4) for v in self.values(metric)],
                        "runs": [m.details for m in self.runs] if metric == "auroc" else None,
                    },
                }
            )
        return rows


def summarise(measurements: Sequence[Measurement]) -> list[Summary]:
    """Group by (benchmark, method), in order of first appearance."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.benchmark, m.method), []).append(m)
    return [Summary(b, method, tuple(runs)) for (b, method), runs in groups.items()]


def p12_anchor(summaries: list[Summary]) -> list[Summary]:
    """DeepWe's PhysioNet 2012 rows read against gradient boosting on the same splits."""
    gb = next((s for s in summaries if s.benchmark == P12_TITLE and s.method.startswith(GB)), None)
    if gb is None:
        return summaries
    anchor = {"value": round(gb.mean("auroc"), 4), "source": f"{GB}, the same patients and splits"}
    return [
        Summary(s.benchmark, s.method, tuple(replace(m, anchor=anchor) for m in s.runs))
        if s.benchmark == P12_TITLE and s.method.startswith("DeepWe")
        else s
        for s in summaries
    ]


def p12_table(summaries: Sequence[Summary], facts: Mapping[str, Any]) -> str:
    lines = [
        "| method | test AUROC | test AUPRC | Brier | ECE | training time (2 cores) |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if s.benchmark != P12_TITLE:
            continue
        time_text = _duration(s.mean("train_seconds"))
        lines.append(
            f"| {s.method} | {s.text('auroc')} | {s.text('auprc')} | {s.text('brier')} | {s.text('ece')} | "
            f"{time_text} |"
        )
    lines.append(_feature_note(facts))
    for p in facts.get("paired", []):
        d = p["deepwe_minus_gradient_boosting"]
        lines.append(
            f"\nSplit seed {p['seed']}: DeepWe - gradient boosting test AUROC {d['difference']:+.3f} "
            f"(paired bootstrap 95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}; DeepWe higher in "
            f"{d['share_a_better']:.0%} of resamples)."
        )
    return "\n".join(lines)


def synth_table(summaries: Sequence[Summary], facts: Mapping[str, Any]) -> str:
    """One row per input set: oracle, DeepWe on those inputs, DeepWe on all (same patients), GB."""
    lines = [
        "| inputs | test patients | oracle AUROC | DeepWe on these inputs: AUROC / AUPRC | "
        "DeepWe all modalities, same patients | gradient boosting on these inputs | DeepWe training time |",
        "|---|---|---|---|---|---|---|",
    ]
    by_benchmark: dict[str, dict[str, Summary]] = {}
    for s in summaries:
        if s.benchmark.startswith("synthetic"):
            by_benchmark.setdefault(s.benchmark, {})[s.method] = s
    for benchmark, methods in by_benchmark.items():
        inputs = benchmark.split(": ", 1)[1]
        own = methods.get(DEEPWE_ALL) or methods.get(f"DeepWe, {inputs} only")
        reference = methods.get(SAME_PATIENTS, own)
        gb = next(s for name, s in methods.items() if name.startswith(GB))
        lines.append(
            f"| {inputs} | {own.runs[0].n_test} | {own.runs[0].anchor['value']:.3f} | "
            f"{own.text('auroc')} / {own.text('auprc')} | {reference.text('auroc')} / {reference.text('auprc')} | "
            f"{gb.text('auroc')} / {gb.text('auprc')} | {_duration(own.mean('train_seconds'))} |"
        )
    lines.append(_feature_note(facts))
    for p in facts.get("paired", []):
        d = p["deepwe_all_minus_deepwe_single"]
        lines.append(
            f"\nDeepWe all modalities - DeepWe {p['modality']} alone, same test patients: AUROC "
            f"{d['difference']:+.3f} (paired bootstrap 95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f})."
        )
    return "\n".join(lines)


def _feature_note(facts: Mapping[str, Any]) -> str:
    columns = sum(facts.get("features", {}).values())
    return (
        f"\nSummary features: {columns} columns, extracted once in {facts.get('feature_seconds', math.nan):.0f} s "
        "(shared by the feature baselines, not counted in their training time; DeepWe's time includes reading "
        "its files every epoch)."
    )


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.1f} s"
        if seconds < 10
        else f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
    )


def write_results(summaries: Sequence[Summary], facts: Mapping[str, Any], path: Path) -> None:
    """Write the JSON rows ``{benchmark, method, metric, mean, sd, n, anchor, details}`` and the run facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": [row for s in summaries for row in s.rows()], "run": facts}
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.deepwe_vs_baselines",
        description="DeepWe against gradient boosting (PhysioNet 2012) and against each modality (synthetic).",
    )
    parser.add_argument("--quick", action="store_true", help="subsets and 1-2 epochs (a few minutes)")
    parser.add_argument("--part", choices=("p12", "synth", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=None, help="PhysioNet 2012 split seeds (default 1)")
    parser.add_argument("--synth-n", type=int, default=None, help="synthetic patients (default 1500)")
    parser.add_argument("--p12-epochs", type=int, default=None, help="most DeepWe epochs on PhysioNet 2012")
    parser.add_argument(
        "--synth-epochs", type=int, default=None, help="most DeepWe epochs on the synthetic cohort"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON of results")
    parser.add_argument("--work", type=Path, default=WORK, help="where cohorts, features and models go")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings()
    overrides = {
        "seeds": args.seeds,
        "synth_n": args.synth_n,
        "p12_epochs": args.p12_epochs,
        "synth_epochs": args.synth_epochs,
    }
    return with_overrides(settings, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_to_console()
    settings = settings_from(args)
    facts: dict[str, Any] = {
        "command": "python -m benchmarks.deepwe_vs_baselines "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": asdict(settings),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    started = time.perf_counter()
    measurements: list[Measurement] = []
    parts: dict[str, Callable[[], tuple[list[Measurement], dict[str, Any]]]] = {
        "p12": lambda: run_p12(settings, args.work, SHARED_DATA),
        "synth": lambda: run_synth(settings, args.work),
    }
    try:
        for name, run_part in parts.items():
            if args.part in (name, "all"):
                part_started = time.perf_counter()
                found, facts[name] = run_part()
                facts[name]["minutes"] = round((time.perf_counter() - part_started) / 60, 1)
                measurements += found
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    facts["minutes"] = round((time.perf_counter() - started) / 60, 1)
    summaries = p12_anchor(summarise(measurements))
    if "p12" in facts:
        print(f"\n## {P12_TITLE}: {facts['p12']['patients']} stays, {settings.seeds} split seed(s)\n")
        print(p12_table(summaries, facts["p12"]))
    if "synth" in facts:
        print(f"\n## synthetic cohort, n={settings.synth_n} (deepwe synth --seed 0 --missing-rate 0.2)\n")
        print(synth_table(summaries, facts["synth"]))
    write_results(summaries, facts, args.out)
    print(f"\nwrote {args.out} ({facts['minutes']:.1f} min in all)")
    return 0 if all(math.isfinite(m.metrics["auroc"]) for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
