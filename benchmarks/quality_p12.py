"""Part ``quality_p12`` of the suite: PhysioNet/CinC 2012 set A, in-hospital death, patient-level CV.

Every method sees the same folds (stratified by outcome, seeded; fold k is the test set, fold k+1
the validation set, the rest training — :func:`benchmarks.unimodal.kfold_splits`):

- DeepWe on the static tabular values and the 48 h series, early stopping on validation AUROC,
  temperature scaling on validation;
- its five ablations (:data:`deepwe_mm.config.ABLATIONS`), each turning exactly one part off,
  trained with the same settings and seed;
- gradient boosting and logistic regression on first/last/min/max/mean/count summary features
  (:mod:`benchmarks.summary_features`), hyperparameters chosen on the validation fold;
- the SAPS-I score shipped with the challenge, recalibrated by a one-variable logistic fit.

Rows: test AUROC, AUPRC, Brier and ECE, mean ± sd over the folds. DeepWe's anchor is gradient
boosting on the same folds; an ablation's anchor is the full DeepWe. One more row gives the per-fold
paired AUROC difference DeepWe - gradient boosting (anchor 0), so "do we beat it" is one line.

    python -m benchmarks.quality_p12 [--quick] [--folds 5] [--limit N] [--epochs 15] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.deepwe_vs_baselines import (
    GB,
    P12_OUTCOME,
    SAPS,
    by_split,
    fit_gradient_boosting,
    fit_logistic,
    fit_score,
    p12_cohort,
    train_deepwe,
)
from benchmarks.deepwe_vs_baselines import Settings as BaselineSettings
from benchmarks.options import log_to_console, subset_of, torch_threads, with_overrides
from benchmarks.rows import result_row
from benchmarks.summary_features import cohort_features
from benchmarks.unimodal import REPO, SHARED_DATA, kfold_splits, write_split_cohort
from deepwe_mm.config import ABLATIONS
from pipelines.cohort import load_cohort
from pipelines.decoded_files import keep_decoded_files
from pipelines.metrics import binary_metrics
from pipelines.train_config import TrainConfig

log = logging.getLogger("deepwe.bench.quality_p12")
notes = logging.getLogger("benchmarks.notes")

WORK = REPO / "runs" / "bench" / "quality_p12"
BENCHMARK = "PhysioNet 2012 in-hospital death, {folds}-fold CV"
DEEPWE = "DeepWe (static tabular + 48 h series)"
LR = "logistic regression on summary features"
SAPS_METHOD = "SAPS-I score (logistic recalibration)"
METRICS = {"auroc": "test AUROC", "auprc": "test AUPRC", "brier": "test Brier", "ece": "test ECE"}
ABLATION_NAMES = {
    "no_feature_gates": "DeepWe without feature gates",
    "mean_fusion": "DeepWe with mean instead of modality attention",
    "no_graph": "DeepWe without the patient graph",
    "no_contrastive": "DeepWe without the contrastive term",
    "no_sparsity": "DeepWe without the sparsity term",
}


@dataclass(frozen=True)
class Settings:
    """How much to run.

    Attributes:
        folds: K of the cross-validation (every patient is in exactly one test fold).
        limit: keep at most this many stays (stratified, seeded), or all 3,996.
        epochs, patience: DeepWe's training length (early stopping on the validation fold).
        ablations: which of :data:`ABLATIONS` to train.
        seed: seeds the folds and every DeepWe training.
        width: the sensor CNN's and the fusion core's hidden width (tokens are 3/4 of it).
        torch_threads: intra-op threads while the part runs (None: leave as is); see
            :func:`benchmarks.options.torch_threads`.
    """

    folds: int = 5
    limit: int | None = None
    epochs: int = 15
    patience: int = 4
    ablations: tuple[str, ...] = tuple(ABLATIONS)
    seed: int = 0

    width: int = 64
    torch_threads: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        """5 folds of 500 stays, 3 epochs, half-width model: every row of the table in about two and a
        half minutes on 2 quiet cores. Too small and short to quote: DeepWe is far from converged."""
        return cls(limit=500, epochs=3, patience=2, width=32)

    def train_config(self, text_cache: Path, ablation: str | None = None) -> TrainConfig:
        """The sizes of the issue-4 PhysioNet 2012 benchmark (at ``width``), with ``ablation``'s
        switch turned off."""
        base = BaselineSettings(p12_epochs=self.epochs, p12_patience=self.patience)
        config = base.p12_config(self.seed, text_cache)
        config = replace(
            config,
            token_dim=config.token_dim * self.width // 64,
            encoders={"sensor": {"hidden": self.width}},
            fusion=config.fusion | {"hidden_dim": self.width} | (ABLATIONS[ablation] if ablation else {}),
        )
        return config


def run_folds(settings: Settings, work: Path, data: Path = SHARED_DATA) -> list[dict[str, dict[str, float]]]:
    """Train and score every method on every fold.

    Returns:
        Per fold, method -> metric (``auroc``, ``auprc``, ``brier``, ``ece``, ``train_seconds``) -> value.
    """
    spec_path, table = p12_cohort(data, work, settings.limit, settings.seed)
    labels = table[P12_OUTCOME].astype(int).to_numpy()
    splits = kfold_splits(table[P12_OUTCOME].tolist(), settings.folds, settings.seed)
    started = time.perf_counter()
    # Summary features of the kept stays only (the import holds all of set A).
    kept = write_split_cohort(spec_path, table, splits[0], work / "kept-stays")
    features = cohort_features(load_cohort(kept)).frame.loc[table["RecordID"]]
    notes.info(
        "PhysioNet 2012 set A: %d stays (%d deaths), %d folds (test k, validation k+1, stratified, seed %d); "
        "%d summary features extracted once in %.0f s. DeepWe: at most %d epochs, patience %d.",
        len(table),
        labels.sum(),
        settings.folds,
        settings.seed,
        features.shape[1],
        time.perf_counter() - started,
        settings.epochs,
        settings.patience,
    )
    saps = table[[SAPS]].replace("", np.nan).astype(np.float64)
    results = []
    with keep_decoded_files():  # every fold and ablation reads the same series files: parse them once
        for k, split in enumerate(splits):
            results.append(run_fold(settings, spec_path, table, split, features, saps, work / f"fold-{k}"))
    return results


def run_fold(
    settings: Settings,
    spec_path: Path,
    table: pd.DataFrame,
    split: np.ndarray,
    features: pd.DataFrame,
    saps: pd.DataFrame,
    work: Path,
) -> dict[str, dict[str, float]]:
    """Every method trained on the ``train``/``val`` rows of ``split`` and scored on its ``test`` rows.

    Args:
        table: the cohort's rows; split: ``(N,)`` train/val/test per row; features: ``(N, F)``
            summary features and saps: ``(N, 1)`` SAPS-I, both in the rows' order.

    Returns:
        Method -> metric (``auroc``, ``auprc``, ``brier``, ``ece``, ``train_seconds``) -> value.
    """
    labels = table[P12_OUTCOME].astype(int).to_numpy()
    spec = write_split_cohort(spec_path, table, split, work / "cohort")
    y = {s: labels[split == s] for s in ("train", "val", "test")}
    log.info("%s: train %d, val %d, test %d", work.name, *(len(y[s]) for s in ("train", "val", "test")))
    x = by_split(features, split)
    baselines = {
        GB: fit_gradient_boosting(x, y, settings.seed),
        LR: fit_logistic(x, y),
        SAPS_METHOD: fit_score({s: v[:, 0] for s, v in by_split(saps, split).items()}, y),
    }
    scores = {
        method: binary_metrics(y["test"], fitted.risk) | {"train_seconds": fitted.seconds}
        for method, fitted in baselines.items()
    }
    for ablation in (None, *settings.ablations):
        config = settings.train_config(work.parent / ".text-cache", ablation)
        result = train_deepwe(spec, work / "models" / (ablation or "deepwe"), config)
        method = DEEPWE if ablation is None else ABLATION_NAMES[ablation]
        scores[method] = {m: float(result.metrics["test"][m]) for m in METRICS} | {
            "train_seconds": result.seconds
        }
    log.info(
        "%s: DeepWe AUROC %.4f, gradient boosting %.4f",
        work.name,
        scores[DEEPWE]["auroc"],
        scores[GB]["auroc"],
    )
    return scores


def summary_rows(per_fold: Sequence[Mapping[str, Mapping[str, float]]], folds: int) -> list[dict[str, Any]]:
    """The result rows: every method and metric over the folds, with anchors (see the module doc)."""
    benchmark = BENCHMARK.format(folds=folds)
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for fold in per_fold:
        for method, metrics in fold.items():
            for metric, value in metrics.items():
                values[method][metric].append(value)

    def mean(method: str, metric: str) -> float | None:
        finite = [v for v in values[method][metric] if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    rows = []
    for method in values:
        anchor_method = GB if method == DEEPWE else DEEPWE if method in ABLATION_NAMES.values() else None
        for metric, label in (*METRICS.items(), ("train_seconds", "training seconds")):
            anchor = mean(anchor_method, metric) if anchor_method and metric in METRICS else None
            rows.append(result_row(benchmark, method, label, values[method][metric], anchor=anchor))
    if DEEPWE in values and GB in values:
        difference = np.subtract(values[DEEPWE]["auroc"], values[GB]["auroc"])
        rows.append(
            result_row(
                benchmark, f"{DEEPWE} - {GB}", "test AUROC difference, same fold", difference, anchor=0.0
            )
        )
    return rows


def verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """One plain sentence: does DeepWe beat gradient boosting on AUROC over the folds?"""
    difference = next(r for r in rows if r["metric"] == "test AUROC difference, same fold")
    spread = 0.0 if difference["sd"] is None else difference["sd"]
    outcome = (
        "beats"
        if difference["mean"] - spread > 0
        else "loses to"
        if difference["mean"] + spread < 0
        else "is within one sd of"
    )
    return (
        f"DeepWe {outcome} gradient boosting on summary features: test AUROC difference "
        f"{difference['mean']:+.3f} ± {spread:.3f} (mean ± sd over {difference['n']} folds)."
    )


def run(quick: bool, work: Path, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The suite's entry point (see :mod:`benchmarks.suite`)."""
    settings = settings or (Settings.quick() if quick else Settings())
    if quick:
        notes.info(
            "Quick run: %d stays, %d epochs; figures show that every path runs, not ones to quote.",
            settings.limit,
            settings.epochs,
        )
    with torch_threads(settings.torch_threads):
        rows = summary_rows(run_folds(settings, work), settings.folds)
    notes.info(verdict(rows))
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality_p12",
        description="PhysioNet 2012 in-hospital death, patient-level CV: DeepWe and its ablations against "
        "gradient boosting, logistic regression and SAPS-I on the same folds.",
    )
    parser.add_argument("--quick", action="store_true", help="5 folds of 500 stays, 3 epochs, half width")
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default 5)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many stays (default all)")
    parser.add_argument("--epochs", type=int, default=None, help="most DeepWe epochs (default 15)")
    parser.add_argument(
        "--ablations",
        type=subset_of(tuple(ABLATIONS), none=True),
        default=None,
        help=f"some of {','.join(ABLATIONS)}, or 'none' (default all)",
    )
    parser.add_argument("--work", type=Path, default=WORK, help="where the cohort copies and models go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_to_console()
    settings = Settings.quick() if args.quick else Settings()
    overrides: dict[str, Any] = {
        "folds": args.folds,
        "limit": args.limit,
        "epochs": args.epochs,
        "ablations": args.ablations,
    }
    settings = with_overrides(settings, overrides)
    try:
        rows = run(args.quick, args.work, settings)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        sd = "" if row["sd"] is None else f" ± {row['sd']:.3f}"
        anchor = "" if row["anchor"] is None else f" (anchor {row['anchor']:.3f})"
        print(f"{row['method']:<60} {row['metric']:<36} {row['mean']:.3f}{sd}{anchor}")
    print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
