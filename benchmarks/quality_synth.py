"""Part ``quality_synth`` of the suite: DeepWe against fusion baselines on ``deepwe synth`` cohorts.

Per missing rate (0, 30% and 60%; :func:`pipelines.sources.synth.generate_cohort`, seed 0, reused when already
written) every method sees the generator's own train/val/test split, and every trained method runs
with seeds 0, 1, 2:

- DeepWe on all six modalities (:func:`pipelines.training.train.train` with ``deepwe train``'s early
  stopping on the calibrated validation log-loss and its calibration on validation);
- DeepWe on each modality alone, trained and scored on the patients that have it;
- late fusion: per patient, the mean of those single-modality models' calibrated risks over the
  modalities the patient has;
- early fusion: per modality, the fused embedding (before the patient graph) of the trained
  single-modality model, concatenated across modalities with zeros and a present flag of 0 for an
  absent one, then a small MLP trained on the training split with early stopping on validation
  log-loss (its inputs for training patients come from models that saw those patients: the usual
  stacking optimism, the same for every seed);
- gradient boosting on the hand-made per-modality summary features of
  :mod:`benchmarks.summary_features` (NaN where absent; its fit does not depend on a seed, so it is
  fitted once per cohort and its sd is 0).

Rows: test AUROC, AUPRC and Brier, mean ± sd over the seeds; test AUROC per missing-modality
pattern (the modalities a test patient has; patterns with at least ``min_pattern_patients`` test
patients and both outcomes); and whether DeepWe ranks the modalities as ``ground_truth.json`` does
(the generator's log-odds weight of each modality's latent component), by its mean modality
weight and by its mean |exact Shapley value| of the risk (:func:`pipelines.reports.modality_effects.modality_effects`),
each averaged over the test patients that have the modality: Spearman rank correlation (ties in
the truth share their rank) and whether the top modality is the truth's. The anchor of an AUROC
is the oracle's: the AUROC of the generator's latent log-odds, which no model sees, on the same
test patients.

Lab values go missing at the missing rate, but demographics (age, sex, admission type) are always
recorded, so the ``labs`` modality is present for every patient and patterns vary over the five
file modalities.

Training reads the same files again and again (seven models per seed, each epoch, plus the passes
that score them), so within one cohort every file is decoded once and kept in memory
(:func:`pipelines.cohorts.decoded_cache.keep_decoded_files`); the results are the same, only faster.

    python -m benchmarks.quality_synth [--quick] [--work DIR]
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from benchmarks.baselines import (
    Fitted,
    Oracle,
    by_split,
    fit_gradient_boosting,
    single_modality,
    synthetic_cohort,
    train_deepwe,
)
from benchmarks.command_line import part_parser, run_part
from benchmarks.options import torch_threads
from benchmarks.paths import bench_config
from benchmarks.rows import result_row
from benchmarks.summary_features import SummaryFeatures, cohort_features
from benchmarks.unimodal import REPO
from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.cohorts.cohort_table import Cohort, load_cohort
from pipelines.cohorts.decoded_cache import keep_decoded_files
from pipelines.common.json_values import finite
from pipelines.evaluation.metrics import auroc, binary_metrics
from pipelines.inference.batching import prediction_loader
from pipelines.reports.modality_effects import modality_effects
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("benchmarks.quality_synth")
notes = logging.getLogger("benchmarks.notes")

WORK = REPO / "runs" / "bench" / "quality_synth"
MISSING_RATES = (0.0, 0.3, 0.6)
SPLITS = ("train", "val", "test")
DEEPWE = "DeepWe"
# The same trained DeepWe without its tree evidence, as training scored it (whole test split only).
NETWORK_ALONE = "DeepWe, the network alone (without tree evidence)"
LATE = "late fusion (mean of single-modality risks)"
EARLY = "early fusion (concatenated embeddings + MLP)"
GB = "gradient boosting on summary features"
BY_WEIGHT = "DeepWe modality weights"
BY_SHAPLEY = "DeepWe |Shapley| of the risk"
BY_SINGLE = "DeepWe single-modality test AUROC"
SPEARMAN = "Spearman rank correlation with ground truth"
TOP = "top modality is ground truth's (share of seeds)"
METRICS = {"auroc": "test AUROC", "auprc": "test AUPRC", "brier": "test Brier"}
# 40 px, not 32: test_resnet's last map is then 2 x 2, not 1 x 1, and batch norm can train on a batch
# that holds a single image (at 60% missing some batches do).
QUICK_ENCODERS = {
    "image": {"backbone": "test_resnet", "image_size": 40},
    "audio": {"channels": [8, 16], "n_mels": 16, "hop_length": 100},
    "sensor": {"hidden": 16},
}


def single(modality: str) -> str:
    """The method name of DeepWe trained on ``modality`` alone."""
    return f"DeepWe, {modality} only"


@dataclass(frozen=True)
class Settings:
    """How much to run.

    Attributes:
        n: patients per synthetic cohort.
        missing_rates: one cohort per rate (``generate_cohort(missing_rate=...)``).
        seeds: training seeds 0 .. seeds-1 of every trained method.
        epochs, patience: DeepWe training length (early stopping as ``deepwe train``'s default).
        quick_sizes: smaller encoders and fusion than ``configs/demo.yaml``'s (see :data:`QUICK_ENCODERS`).
        min_pattern_patients: test patients a missing-modality pattern needs to get an AUROC row.
        mlp_hidden, mlp_epochs, mlp_patience, mlp_batch, mlp_lr: the early-fusion MLP (AdamW).
        torch_threads: intra-op threads while the part runs (restored after), None = leave as is.
            One: the models are small and a second thread on 2 shared cores costs more than it
            gives (one training took 2.4 s on one thread, 13 s on two, at load average 3).
    """

    n: int = 5000
    missing_rates: tuple[float, ...] = MISSING_RATES
    seeds: int = 3
    epochs: int = 20
    patience: int = 4
    quick_sizes: bool = False
    min_pattern_patients: int = 30
    mlp_hidden: int = 64
    mlp_epochs: int = 200
    mlp_patience: int = 15
    mlp_batch: int = 64
    mlp_lr: float = 3e-3
    torch_threads: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        """Every table, but tiny: 200 patients, one epoch, small encoders (under 2 minutes on 2 cores)."""
        return cls(n=200, epochs=1, patience=1, quick_sizes=True, min_pattern_patients=5, mlp_epochs=60)

    def train_config(self, seed: int, text_cache: Path) -> TrainConfig:
        """The sizes of ``configs/bench/synth.yaml`` (or smaller ones)."""
        config = bench_config(
            "synth", epochs=self.epochs, patience=self.patience, seed=seed, text_cache=str(text_cache)
        )
        if self.quick_sizes:
            config = replace(
                config, token_dim=16, encoders=QUICK_ENCODERS, fusion={"hidden_dim": 24, "n_heads": 2}
            )
        return config


# --- missing-modality patterns ---------------------------------------------------------------------


def pattern_name(present: Mapping[str, bool]) -> str:
    """``"complete"``, or ``"missing: a+b"`` naming the absent modalities in the given order."""
    absent = [name for name, flag in present.items() if not flag]
    return "complete" if not absent else "missing: " + "+".join(absent)


def patterns(present: pd.DataFrame) -> pd.Series:
    """Per patient, the name of its missing-modality pattern.

    Args:
        present: ``(N, M)`` bool, one column per modality (spec order), indexed by patient id.

    Returns:
        ``(N,)`` names, same index.
    """
    return pd.Series(
        [pattern_name(row) for row in present.to_dict("records")], index=present.index, dtype=object
    )


def missing_counts(present: pd.DataFrame) -> pd.Series:
    """Per patient, how many modalities are absent (``"0"``, ``"1"``, ...): a coarser grouping than
    :func:`patterns` that still has enough patients per group in small cohorts.

    Args:
        present: ``(N, M)`` bool, indexed by patient id.

    Returns:
        ``(N,)`` the count as text, same index.
    """
    return (~present.astype(bool)).sum(axis=1).astype(str).astype(object)


def scored_patterns(labels: pd.Series, pattern: pd.Series, min_patients: int) -> list[str]:
    """The patterns of ``pattern`` with at least ``min_patients`` patients and both outcomes, largest first.

    Args:
        labels: ``(N,)`` 0/1 outcomes; pattern: ``(N,)`` pattern names; both indexed by patient id.
    """
    kept = []
    for name, ids in pattern.groupby(pattern, sort=False).groups.items():
        outcomes = labels.loc[ids]
        if len(ids) >= min_patients and outcomes.nunique() == 2:
            kept.append((len(ids), name))
    return [name for _, name in sorted(kept, key=lambda item: (-item[0], item[1]))]


def auroc_by_pattern(
    labels: pd.Series, risk: pd.Series, pattern: pd.Series, chosen: Sequence[str]
) -> dict[str, float]:
    """AUROC of ``risk`` within each pattern of ``chosen``.

    Args:
        labels, risk, pattern: ``(N,)`` 0/1 outcomes, risks and pattern names by patient id; ``risk``
            may cover a subset of ``labels``' patients (the method's own).
        chosen: the patterns to score (e.g. from :func:`scored_patterns`).

    Returns:
        Pattern name -> AUROC over the patients of that pattern that ``risk`` covers (NaN if one class).
    """
    out = {}
    for name in chosen:
        ids = pattern.index[(pattern == name).to_numpy()].intersection(risk.index)
        out[name] = auroc(labels.loc[ids].to_numpy(), risk.loc[ids].to_numpy())
    return out


# --- the fusion baselines ----------------------------------------------------------------------------


def late_fusion(risks: pd.DataFrame) -> pd.Series:
    """Per patient, the mean of the single-modality risks of the modalities it has.

    Args:
        risks: ``(N, M)`` calibrated risks of the single-modality models, NaN where the patient
            lacks the modality.

    Returns:
        ``(N,)`` the late-fusion risk.

    Raises:
        ValueError: a patient without any single-modality risk.
    """
    empty = risks.index[risks.isna().all(axis=1).to_numpy()]
    if len(empty):
        raise ValueError(f"patients {list(empty[:5])} have no single-modality risk to average")
    return risks.mean(axis=1, skipna=True)


def early_fusion_features(embeddings: Mapping[str, pd.DataFrame], ids: Sequence[str]) -> pd.DataFrame:
    """Per-modality embeddings side by side, zeros and a present flag of 0 where a patient lacks one.

    Args:
        embeddings: modality -> ``(N_m, H_m)`` embeddings indexed by the ids of the patients that
            have the modality.
        ids: the N patients of the output, in order.

    Returns:
        ``(N, sum_m (H_m + 1))`` float64: per modality its ``H_m`` columns ``"<m>:<j>"`` then
        ``"<m>:present"`` (1.0 or 0.0).
    """
    index = pd.Index(list(ids))
    blocks = []
    for modality, frame in embeddings.items():
        block = frame.reindex(index).astype(np.float64)
        block.columns = [f"{modality}:{j}" for j in range(frame.shape[1])]
        has = index.isin(frame.index)
        blocks.append(block.fillna(0.0).assign(**{f"{modality}:present": has.astype(np.float64)}))
    return pd.concat(blocks, axis=1)


def fit_mlp(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], seed: int, settings: Settings
) -> Fitted:
    """A one-hidden-layer MLP on standardised features; the epoch with the lowest validation log-loss.

    Args:
        x: ``"train"``, ``"val"``, ``"test"`` -> ``(N_split, F)`` finite features.
        y: the same splits -> ``(N_split,)`` 0/1 labels.
        seed: seeds the initialisation, dropout and batch order.
    """
    started = time.perf_counter()
    mean = x["train"].mean(0)
    std = np.where(x["train"].std(0) > 1e-8, x["train"].std(0), 1.0)
    tensors = {s: torch.as_tensor((x[s] - mean) / std, dtype=torch.float32) for s in SPLITS}
    labels = {s: torch.as_tensor(y[s], dtype=torch.float32) for s in SPLITS}
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(tensors["train"].shape[1], settings.mlp_hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(settings.mlp_hidden, 1),
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.mlp_lr, weight_decay=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    best, best_loss, best_epoch, waited = None, math.inf, 0, 0
    for epoch in range(settings.mlp_epochs):
        net.train()
        order = torch.randperm(len(labels["train"]), generator=generator)
        for rows in order.split(settings.mlp_batch):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(tensors["train"][rows])[:, 0], labels["train"][rows]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            loss = float(loss_fn(net(tensors["val"])[:, 0], labels["val"]))
        if best is None or loss < best_loss - 1e-6:
            best = {k: v.clone() for k, v in net.state_dict().items()}
            best_loss, best_epoch, waited = loss, epoch, 0
        else:
            waited += 1
            if waited >= settings.mlp_patience:
                break
    net.load_state_dict(best)
    net.eval()
    with torch.no_grad():
        risk = torch.sigmoid(net(tensors["test"])[:, 0]).numpy().astype(np.float64)
    chosen = {"epochs": best_epoch + 1, "val_log_loss": best_loss, "hidden": settings.mlp_hidden}
    return Fitted(risk, time.perf_counter() - started, chosen)


# --- ranking the modalities ----------------------------------------------------------------------------


def ranking_agreement(scores: Mapping[str, float], truth: Mapping[str, float]) -> tuple[float, float]:
    """How well ``scores`` order the modalities as ``truth`` does.

    Args:
        scores: modality -> the method's importance (higher = more important).
        truth: modality -> the ground-truth signal weight, for the same modalities.

    Returns:
        (Spearman rank correlation, ties sharing their rank; NaN when either side is constant,
        1.0 if the method's top modality is one of the truth's top ones else 0.0; a tie at the
        method's top counts as a miss unless every tied modality is a truth top.) Both NaN when a
        score is not finite.
    """
    names = list(truth)
    if set(scores) != set(names):
        raise ValueError(f"scores name {sorted(scores)}, the truth {sorted(names)}")
    a = np.array([scores[m] for m in names], dtype=np.float64)
    b = np.array([truth[m] for m in names], dtype=np.float64)
    if not np.isfinite(a).all():  # e.g. a single-modality AUROC on a one-class test set
        return math.nan, math.nan
    rho = math.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)
    truth_top = {m for m in names if truth[m] == b.max()}
    method_top = {m for m in names if scores[m] == a.max()}
    return rho, float(method_top <= truth_top)


def mean_over_present(values: np.ndarray, present: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per modality, the mean of ``values`` over the patients that have it (NaN if none).

    Args:
        values: ``(N, M)``; present: ``(N, M)`` bool; names: the M modality names.
    """
    out = {}
    for k, name in enumerate(names):
        rows = present[:, k]
        out[name] = float(values[rows, k].mean()) if rows.any() else math.nan
    return out


# --- one cohort ------------------------------------------------------------------------------------------


@dataclass
class SynthCohort:
    """A generated cohort and everything every method shares.

    Attributes:
        ids: ``(N,)`` patient ids in table order; split: ``(N,)`` the generator's split.
        labels: ``(N,)`` 0/1 outcomes by id; present: ``(N, M)`` bool by id (spec order).
        truth: modality -> ground-truth signal weight.
    """

    missing_rate: float
    spec_path: Path
    cohort: Cohort
    ids: np.ndarray
    split: np.ndarray
    labels: pd.Series
    present: pd.DataFrame
    oracle: Oracle
    truth: dict[str, float]
    features: SummaryFeatures

    @property
    def modalities(self) -> list[str]:
        return list(self.present.columns)

    @property
    def test_ids(self) -> np.ndarray:
        return self.ids[self.split == "test"]

    def y(self) -> dict[str, np.ndarray]:
        """Split -> ``(N_split,)`` 0/1 labels in table order (the rows of :func:`by_split`)."""
        labels = self.labels.loc[self.ids].to_numpy()
        return {s: labels[self.split == s] for s in SPLITS}


def load_synth(n: int, missing_rate: float, folder: Path) -> SynthCohort:
    """Generate (or reuse) the cohort and read what every method shares, summary features included."""
    spec_path = synthetic_cohort(n, folder, missing_rate)
    cohort = load_cohort(spec_path)
    truth = json.loads((spec_path.parent / "ground_truth.json").read_text(encoding="utf-8"))
    records = list(cohort.records())
    ids = np.array([r.patient_id for r in records])
    started = time.perf_counter()
    features = cohort_features(cohort)
    log.info(
        "synth missing %.0f%%: %d summary features in %.0f s",
        100 * missing_rate,
        features.frame.shape[1],
        time.perf_counter() - started,
    )
    return SynthCohort(
        missing_rate=missing_rate,
        spec_path=spec_path,
        cohort=cohort,
        ids=ids,
        split=np.array([r.split for r in records]),
        labels=pd.Series([int(r.outcome) for r in records], index=ids),
        present=pd.DataFrame([r.present() for r in records], index=ids)[list(cohort.spec.modalities)],
        oracle=Oracle.from_truth(truth),
        truth={m: float(v["signal_weight"]) for m, v in truth["modalities"].items()},
        features=features,
    )


@torch.no_grad()
def model_outputs(bundle: Bundle, cohort: Cohort, batch_size: int = 64) -> tuple[pd.Series, pd.DataFrame]:
    """Every patient of ``cohort`` through the bundle's prediction path.

    Returns:
        ``(N,)`` calibrated positive risk and ``(N, H)`` fused embeddings (before the patient
        graph), both indexed by patient id.
    """
    loader, collate = prediction_loader(
        bundle, cohort, range(len(cohort.table)), batch_size=batch_size, hash_inputs=False
    )
    ids, risks, fused = [], [], []
    for samples, _, _ in loader:
        batch = collate(samples).to(bundle.device)
        output = bundle.model(batch)
        risks.append(torch.softmax(output.logits.float() / bundle.temperature, 1)[:, 1].cpu().numpy())
        fused.append(output.fused.float().cpu().numpy())
        ids += batch.patient_ids
    return (
        pd.Series(np.concatenate(risks).astype(np.float64), index=ids),
        pd.DataFrame(np.concatenate(fused).astype(np.float64), index=ids),
    )


@dataclass
class SeedResult:
    """One seed on one cohort.

    Attributes:
        risks: method -> test risks indexed by patient id (the method's own test patients).
        importance: ranking source -> modality -> importance.
        details: method -> what training chose (DeepWe's best epoch, the MLP's epochs, the trees).
    """

    risks: dict[str, pd.Series] = field(default_factory=dict)
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def single_modality_cohorts(data: SynthCohort) -> dict[str, Cohort]:
    """Per modality, the cohort keeping that modality and the patients that have it (in memory)."""
    table = data.cohort.table
    specs = {}
    for modality in data.modalities:
        has = set(data.ids[data.present[modality].to_numpy()])
        rows = table[table[data.cohort.spec.id].astype(str).isin(has)]
        specs[modality] = single_modality(data.cohort, rows, modality)
    return specs


def gradient_boosting(data: SynthCohort) -> Fitted:
    """Gradient boosting on every modality's summary features; ``risk`` is a ``(N_test,)`` Series by id.

    Fitted once per cohort: with neither subsampling nor early stopping (``GB_PARAMS``) the fit does
    not depend on its seed, so refitting it per seed would give the same risks.
    """
    fitted = fit_gradient_boosting(by_split(data.features.frame.loc[data.ids], data.split), data.y(), seed=0)
    return replace(fitted, risk=pd.Series(fitted.risk, index=data.test_ids))


def run_seed(
    data: SynthCohort,
    singles: Mapping[str, Cohort],
    gb: Fitted,
    seed: int,
    settings: Settings,
    work: Path,
) -> SeedResult:
    """Train and score every method of one seed on one cohort (``gb``: :func:`gradient_boosting`'s)."""
    result = SeedResult()
    text_cache = work / ".text-cache"
    config = settings.train_config(seed, text_cache)
    models = work / "models" / _rate_folder(data.missing_rate) / f"seed-{seed}"
    test = data.test_ids
    names = data.modalities

    trained = train_deepwe(data.spec_path, models / "all", config)
    bundle = load_bundle(trained.bundle)
    positions = np.flatnonzero(data.split == "test").tolist()
    effects = modality_effects(bundle, data.cohort, positions)
    result.risks[DEEPWE] = pd.Series(effects.risk, index=test)
    present = data.present.loc[test].to_numpy()
    result.importance[BY_WEIGHT] = mean_over_present(effects.modality_weights, present, names)
    result.importance[BY_SHAPLEY] = mean_over_present(np.abs(effects.shapley), present, names)
    trees = trained.metrics.get("tree_evidence", {})
    result.details[DEEPWE] = {
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.metrics["best_epoch"],
        "tree_weight": trees.get("weight"),
        "network_alone": trees.get("network_alone", {}).get("test"),
    }

    single_test = pd.DataFrame(np.nan, index=test, columns=names)
    embeddings: dict[str, pd.DataFrame] = {}
    result.importance[BY_SINGLE] = {}
    for modality, spec in singles.items():
        trained = train_deepwe(spec, models / modality, config)
        risk, embeddings[modality] = model_outputs(load_bundle(trained.bundle), spec)
        own = test[np.isin(test, risk.index)]
        result.risks[single(modality)] = risk.loc[own]
        single_test.loc[own, modality] = risk.loc[own]
        result.importance[BY_SINGLE][modality] = auroc(
            data.labels.loc[own].to_numpy(), risk.loc[own].to_numpy()
        )
    result.risks[LATE] = late_fusion(single_test)

    split = data.split
    early = early_fusion_features(embeddings, data.ids)
    fitted = fit_mlp(by_split(early, split), data.y(), seed, settings)
    result.risks[EARLY] = pd.Series(fitted.risk, index=test)
    result.details[EARLY] = fitted.chosen
    result.risks[GB] = gb.risk
    result.details[GB] = gb.chosen
    log.info(
        "missing %.0f%% seed %d: test AUROC %s",
        100 * data.missing_rate,
        seed,
        ", ".join(
            f"{m} {auroc(data.labels.loc[r.index].to_numpy(), r.to_numpy()):.3f}"
            for m, r in result.risks.items()
        ),
    )
    return result


# --- rows ----------------------------------------------------------------------------------------------


def _rate_folder(rate: float) -> str:
    return f"missing-{round(100 * rate)}"


def benchmark_names(n: int, rate: float) -> tuple[str, str, str]:
    """The comparison, per-pattern and ranking benchmark names of one cohort."""
    base = f"synth n={n}, missing {100 * rate:.0f}%"
    return (
        base,
        f"{base}: test AUROC by missing-modality pattern",
        f"synth modality ranking, n={n}, missing {100 * rate:.0f}%",
    )


def _row(
    benchmark: str, method: str, metric: str, values: Sequence[float], anchor: float | None = None
) -> dict[str, Any] | None:
    """A result row, or None when no seed gave a finite value (logged as a note)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        notes.info(
            "%s: %s, %s is undefined on every seed (one outcome class?); no row", benchmark, method, metric
        )
        return None
    return result_row(benchmark, method, metric, finite, anchor=anchor)


def cohort_rows(data: SynthCohort, runs: Sequence[SeedResult], settings: Settings) -> list[dict[str, Any]]:
    """The comparison, per-pattern and ranking rows of one cohort over its seeds."""
    comparison, by_pattern, ranking = benchmark_names(settings.n, data.missing_rate)
    labels = data.labels
    rows = []
    for method in runs[0].risks:
        own = runs[0].risks[method].index
        oracle = finite(data.oracle.anchor(labels, own.to_numpy(), "logit")["value"])
        metrics = [
            binary_metrics(labels.loc[r.risks[method].index].to_numpy(), r.risks[method].to_numpy())
            for r in runs
        ]
        for key, metric in METRICS.items():
            anchor = oracle if key == "auroc" else None
            rows.append(_row(comparison, method, metric, [m[key] for m in metrics], anchor))
    alone = [r.details[DEEPWE]["network_alone"] for r in runs]
    if all(scores is not None for scores in alone):  # the same networks without their tree evidence
        for key, metric in METRICS.items():
            rows.append(_row(comparison, NETWORK_ALONE, metric, [scores[key] for scores in alone]))
    present = data.present.loc[data.test_ids]
    groupings = {"pattern": patterns(present), "modalities missing": missing_counts(present)}
    for kind, pattern in groupings.items():
        chosen = scored_patterns(labels.loc[data.test_ids], pattern, settings.min_pattern_patients)
        if not chosen:
            notes.info(
                "%s: no group by %s has %d test patients with both outcomes",
                comparison,
                kind,
                settings.min_pattern_patients,
            )
        for method in (DEEPWE, LATE, EARLY, GB):
            per_seed = [auroc_by_pattern(labels, r.risks[method], pattern, chosen) for r in runs]
            for name in chosen:
                ids = pattern.index[(pattern == name).to_numpy()]
                oracle = finite(data.oracle.anchor(labels, ids.to_numpy(), "logit")["value"])
                metric = f"test AUROC, {kind}: {name} ({len(ids)} test patients)"
                rows.append(_row(by_pattern, method, metric, [p[name] for p in per_seed], oracle))
    rows += ranking_rows(data, runs, ranking)
    notes.info(
        "%s: DeepWe's best epoch per seed %s (of at most %d) and tree-evidence weight %s, early-fusion "
        "MLP epochs %s, gradient boosting %d trees.",
        comparison,
        [r.details[DEEPWE]["best_epoch"] for r in runs],
        settings.epochs,
        [r.details[DEEPWE].get("tree_weight") for r in runs],
        [r.details[EARLY]["epochs"] for r in runs],
        runs[0].details[GB]["trees"],
    )
    return [row for row in rows if row is not None]


def ranking_rows(data: SynthCohort, runs: Sequence[SeedResult], benchmark: str) -> list[dict[str, Any]]:
    """Spearman and top-modality agreement with the truth per ranking source, and the mean importances.

    The anchor of the agreement rows is the oracle's: the same figures for the per-modality AUROC
    of the generator's latent components on the same test patients (what a perfect reader of each
    modality would rank, given this sample).
    """
    test = data.test_ids
    oracle_scores = {}
    for m in data.modalities:
        own = test[data.present.loc[test, m].to_numpy()]
        oracle_scores[m] = data.oracle.anchor(data.labels, own, m)["value"]
    oracle_rho, oracle_top = ranking_agreement(oracle_scores, data.truth)
    rows = []
    for source in (BY_WEIGHT, BY_SHAPLEY, BY_SINGLE):
        agreement = [ranking_agreement(r.importance[source], data.truth) for r in runs]
        rows.append(_row(benchmark, source, SPEARMAN, [a[0] for a in agreement], finite(oracle_rho)))
        rows.append(_row(benchmark, source, TOP, [a[1] for a in agreement], finite(oracle_top)))
        if source == BY_SINGLE:
            continue
        what = "mean weight" if source == BY_WEIGHT else "mean |Shapley|"
        for m in data.modalities:
            metric = f"{what}: {m} (truth {data.truth[m]:g})"
            rows.append(_row(benchmark, source, metric, [r.importance[source][m] for r in runs]))
    return rows


# --- the part ------------------------------------------------------------------------------------------


def run(quick: bool, work: Path, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every cohort and seed of ``settings`` (default: :meth:`Settings.quick` or full); the result rows."""
    settings = settings or (Settings.quick() if quick else Settings())
    if settings.quick_sizes or settings.n < 1000:
        notes.info(
            "quick setting (n=%d, %d epoch(s), small encoders): the figures show that every path runs, "
            "they are too small to quote.",
            settings.n,
            settings.epochs,
        )
    notes.info(
        "Synthetic cohorts (deepwe synth, seed 0, the generator's split; labs always present): mean ± sd "
        "over %d training seeds, every method on the same patients. Anchor of an AUROC: the oracle (the "
        "generator's latent log-odds) on the same test patients. Patterns with >= %d test patients and "
        "both outcomes. Modality ranking: importances averaged over the test patients that have the "
        "modality, against ground_truth.json's signal weights (anchor: the same for the latent components' "
        "AUROCs). Gradient boosting does not depend on its seed: fitted once per cohort, sd 0.",
        settings.seeds,
        settings.min_pattern_patients,
    )
    rows: list[dict[str, Any]] = []
    with torch_threads(settings.torch_threads):
        for rate in settings.missing_rates:
            started = time.perf_counter()
            folder = work / "cohorts" / f"synth-n{settings.n}-{_rate_folder(rate)}"
            with keep_decoded_files():
                data = load_synth(settings.n, rate, folder / "all")
                singles = single_modality_cohorts(data)
                gb = gradient_boosting(data)
                runs = [run_seed(data, singles, gb, seed, settings, work) for seed in range(settings.seeds)]
            rows += cohort_rows(data, runs, settings)
            log.info("missing %.0f%%: %.0f s", 100 * rate, time.perf_counter() - started)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Test AUROC per method and missing rate, then the ranking agreement (mean ± sd over seeds)."""
    comparison = [
        r for r in rows if r["metric"] == METRICS["auroc"] and not r["benchmark"].startswith("synth modality")
    ]
    rates = list(dict.fromkeys(r["benchmark"] for r in comparison))
    cell = {(r["benchmark"], r["method"]): r for r in comparison}
    lines = [
        "| method | " + " | ".join(b.split(", ", 1)[1] for b in rates) + " |",
        "|---" * (len(rates) + 1) + "|",
    ]
    for method in dict.fromkeys(r["method"] for r in comparison):
        lines.append(f"| {method} | " + " | ".join(_text(cell.get((b, method))) for b in rates) + " |")
    lines.append(
        "| oracle (latent log-odds) | " + " | ".join(_anchor(cell.get((b, DEEPWE))) for b in rates) + " |"
    )
    index = {(r["benchmark"], r["method"], r["metric"]): r for r in rows}
    for benchmark in dict.fromkeys(r["benchmark"] for r in rows if r["metric"] == SPEARMAN):
        parts = [
            f"{source}: ρ {_text(index.get((benchmark, source, SPEARMAN)))}, "
            f"top right {_text(index.get((benchmark, source, TOP)))}"
            for source in (BY_WEIGHT, BY_SHAPLEY, BY_SINGLE)
        ]
        lines.append(f"\n{benchmark}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def _text(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['mean']:.3f}" + ("" if row["sd"] is None else f" ± {row['sd']:.3f}")


def _anchor(row: Mapping[str, Any] | None) -> str:
    return "-" if row is None or row["anchor"] is None else f"{row['anchor']:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = part_parser(
        "quality_synth",
        "DeepWe against single modalities, late and early fusion and gradient boosting on synthetic "
        "cohorts with 0, 30 and 60% missing modalities; modality ranking against the truth.",
        quick="200 patients, one epoch (under 2 minutes)",
    )
    parser.add_argument("--n", type=int, default=None, help="patients per cohort (default 5,000; 200 quick)")
    parser.add_argument("--epochs", type=int, default=None, help="most DeepWe epochs (default 20)")
    args = parser.parse_args(argv)
    load = os.getloadavg()

    def report(settings: Settings, rows: list[dict[str, Any]]) -> str:
        title = (
            f"## Synthetic cohorts: test AUROC, mean ± sd over seeds (load average {load[0]:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end)"
        )
        return f"\n{title}\n\n{markdown_table(rows)}"

    return run_part(
        "quality_synth",
        args,
        argv,
        Settings,
        {"n": args.n, "epochs": args.epochs},
        run,
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
