"""Part ``quality_p12`` of the suite: PhysioNet/CinC 2012 set A, in-hospital death, patient-level CV.

Every method sees the same folds (stratified by outcome, seeded; fold k is the test set, fold k+1
the validation set, the rest training — :func:`benchmarks.unimodal.kfold_splits`):

- DeepWe on the static tabular values and the 48 h series with ``deepwe train``'s default settings
  (no tuning for this data set), and an ensemble of ``k`` of them (seeds 0..k-1);
- its ablations (:data:`deepwe_mm.config.ABLATIONS`, plus two of the sensor encoder: the series as
  time-window tokens of a temporal CNN instead of per-variable tokens, and statistic tokens without
  the trajectory tokens), each changing exactly one part, trained with the same settings and seed;
- with ``--tuned YAML``, DeepWe (and its ensemble) with the settings of a ``deepwe tune`` run;
- gradient boosting and logistic regression on first/last/min/max/mean/count summary features
  (:mod:`benchmarks.summary_features`), hyperparameters chosen on the validation fold;
- the SAPS-I score shipped with the challenge, recalibrated by a one-variable logistic fit.

Rows: test AUROC, AUPRC, Brier and ECE, mean ± sd over the folds. DeepWe's anchor is gradient
boosting on the same folds; an ablation's anchor is the full DeepWe. One more row gives the per-fold
paired AUROC difference DeepWe - gradient boosting (anchor 0), so "do we beat it" is one line.

    python -m benchmarks.quality_p12 [--quick] [--folds 5] [--limit N] [--epochs N] [--ensemble K] [--work DIR]
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.baselines import (
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
from benchmarks.command_line import part_parser, run_part
from benchmarks.options import subset_of, torch_threads
from benchmarks.rows import result_row
from benchmarks.summary_features import cohort_features
from benchmarks.unimodal import REPO, SHARED_DATA, kfold_splits, split_cohort
from deepwe_mm.config import ABLATIONS
from pipelines.cohorts.decoded_cache import keep_decoded_files
from pipelines.evaluation.metrics import binary_metrics
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.bench.quality_p12")
notes = logging.getLogger("benchmarks.notes")

WORK = REPO / "runs" / "bench" / "quality_p12"
BENCHMARK = "PhysioNet 2012 in-hospital death, {folds}-fold CV"
DEEPWE = "DeepWe (static tabular + 48 h series)"
ENSEMBLE = "DeepWe, ensemble of {k}"
# The same trained model scored without the trees' log-odds (from its metrics.json).
NETWORK_ALONE = "{method}: the network alone, without tree evidence"
TUNED = "DeepWe with the settings of {name}"
LR = "logistic regression on summary features"
SAPS_METHOD = "SAPS-I score (logistic recalibration)"
METRICS = {
    "auroc": "test AUROC",
    "auprc": "test AUPRC",
    "brier": "test Brier",
    "ece": "test ECE",
    "calibration_slope": "test calibration slope",
}
# DeepWe rows also report their validation split, the only scores settings may be chosen on.
VALIDATION_METRICS = {"auroc": "validation AUROC", "log_loss": "validation log-loss"}
SERIES_AS_WINDOWS = "series_as_windows"
NO_TRAJECTORIES = "no_trajectories"
# Ablations of the sensor encoder rather than the fusion core: training settings they override.
ENCODER_ABLATIONS: dict[str, dict[str, Any]] = {
    SERIES_AS_WINDOWS: {"sensor": {"tokens": "windows"}},
    NO_TRAJECTORIES: {"sensor": {"trajectory": False}},
}
ABLATION_NAMES = {
    "no_feature_gates": "DeepWe without feature gates",
    "with_flat_readout": "DeepWe with concatenated instead of pooled tabular tokens",
    "gates_without_context": "DeepWe with gates that see one token each",
    "sigmoid_gates": "DeepWe with sigmoid instead of stochastic gates",
    "no_gate_positions": "DeepWe without per-variable gate offsets",
    "with_gate_leak": "DeepWe with a leaky gate clamp (gate_leak 0.1)",
    "with_encoder_heads": "DeepWe with encoder heads on ungated tokens (lambda_encoder 0.3)",
    "no_random_masking": "DeepWe without random token masking",
    "attention_only_fusion": "DeepWe without additive per-modality evidence",
    "no_auxiliary_heads": "DeepWe without the per-modality auxiliary loss",
    "with_token_mixing": "DeepWe with token mixing (two transformer layers)",
    "with_mlp_projection": "DeepWe with an MLP from pooled tokens to modality token",
    "with_modality_dropout": "DeepWe with modality dropout 0.15",
    "mean_fusion": "DeepWe with mean instead of modality attention",
    "no_graph": "DeepWe without the patient graph",
    "no_neighbour_outcomes": "DeepWe with a graph blind to neighbours' outcomes",
    "no_contrastive": "DeepWe without the contrastive term",
    "no_sparsity": "DeepWe without the sparsity term",
    "no_teacher": "DeepWe without the gradient-boosting teacher",
    "no_tree_evidence": "DeepWe without tree evidence (trained again)",
    SERIES_AS_WINDOWS: "DeepWe with the series as hourly windows (temporal CNN)",
    NO_TRAJECTORIES: "DeepWe without trajectory tokens (series statistics only)",
}
ABLATION_CHOICES = (*ABLATIONS, *ENCODER_ABLATIONS)


@dataclass(frozen=True)
class Settings:
    """How much to run.

    Attributes:
        folds: K of the cross-validation (every patient is in exactly one test fold).
        limit: keep at most this many stays (stratified, seeded), or all 3,996.
        epochs: DeepWe's most epochs (None: ``deepwe train``'s default; early stopping on the
            validation fold's log-loss).
        ablations: which of :data:`ABLATION_CHOICES` to train.
        ensemble: k of the ensemble row (0: no ensemble row).
        tuned: a ``deepwe train --config`` YAML (e.g. ``deepwe tune``'s ``best.yaml``) for one more
            DeepWe row (and its ensemble of ``ensemble``), trained on every fold with those settings.
        seed: seeds the folds and every DeepWe training.
        torch_threads: intra-op threads while the part runs (None: leave as is); see
            :func:`benchmarks.options.torch_threads`.
    """

    folds: int = 5
    limit: int | None = None
    epochs: int | None = None
    ablations: tuple[str, ...] = ABLATION_CHOICES
    ensemble: int = 5
    tuned: Path | None = None
    seed: int = 0
    torch_threads: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        """5 folds of 500 stays, 3 epochs, an ensemble of 2: every row of the table in a few
        minutes on 2 quiet cores. Too small and short to quote: DeepWe is far from converged."""
        return cls(limit=500, epochs=3, ensemble=2)

    def train_config(
        self, text_cache: Path, ablation: str | None = None, ensemble: int = 1, *, tuned: bool = False
    ) -> TrainConfig:
        """``deepwe train``'s defaults (or with ``tuned`` the settings of :attr:`tuned`; the
        benchmark's epochs when set), ``ensemble`` members, with ``ablation``'s one change."""
        config = TrainConfig.from_yaml(self.tuned) if tuned and self.tuned is not None else TrainConfig()
        config = replace(config, seed=self.seed, text_cache=str(text_cache), ensemble=ensemble)
        if self.epochs is not None:
            config = replace(config, epochs=self.epochs, patience=min(config.patience, self.epochs))
        if ablation in ENCODER_ABLATIONS:
            return replace(config, encoders=config.encoders | ENCODER_ABLATIONS[ablation])
        if ablation is not None:
            return replace(config, fusion=config.fusion | ABLATIONS[ablation])
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
    kept = split_cohort(spec_path, table, splits[0])
    features = cohort_features(kept).frame.loc[table["RecordID"]]
    notes.info(
        "PhysioNet 2012 set A: %d stays (%d deaths), %d folds (test k, validation k+1, stratified, seed %d); "
        "%d summary features extracted once in %.0f s. DeepWe: %s.",
        len(table),
        labels.sum(),
        settings.folds,
        settings.seed,
        features.shape[1],
        time.perf_counter() - started,
        "deepwe train's default settings" if settings.epochs is None else f"at most {settings.epochs} epochs",
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
    spec = split_cohort(spec_path, table, split)
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
    runs = []
    variants = [(DEEPWE, ENSEMBLE, False)]
    if settings.tuned is not None:
        tuned = TUNED.format(name=settings.tuned.name)
        variants.append((tuned, tuned + ", ensemble of {k}", True))
    for single, ensemble, tuned_settings in variants:
        config = settings.train_config(work.parent / ".text-cache", tuned=tuned_settings)
        if settings.ensemble > 1:
            scores |= _ensemble_scores(
                spec, work, replace(config, ensemble=settings.ensemble), single, ensemble
            )
        else:
            runs.append((single, "tuned" if tuned_settings else "deepwe", config))
    for ablation in settings.ablations:
        runs.append(
            (ABLATION_NAMES[ablation], ablation, settings.train_config(work.parent / ".text-cache", ablation))
        )
    for method, folder, config in runs:
        result = train_deepwe(spec, work / "models" / folder, config)
        scores[method] = (
            {m: float(result.metrics["test"][m]) for m in METRICS}
            | {"train_seconds": result.seconds}
            | {f"val_{m}": float(result.metrics["val"][m]) for m in VALIDATION_METRICS}
        )
        if folder in ("deepwe", "tuned"):
            scores |= _network_alone(method, result.metrics)
        shutil.rmtree(work / "models" / folder, ignore_errors=True)
    log.info(
        "%s: DeepWe AUROC %.4f, gradient boosting %.4f",
        work.name,
        scores[DEEPWE]["auroc"],
        scores[GB]["auroc"],
    )
    return scores


def _ensemble_scores(
    spec: Any, work: Path, config: TrainConfig, single: str, ensemble: str
) -> dict[str, dict[str, float]]:
    """Test scores of an ensemble (method ``ensemble``, with ``{k}`` its size) and of its member 0
    (method ``single``). Member 0 is the single model of the same settings, seed and data, so it is
    not trained twice."""
    result = train_deepwe(spec, work / "models" / "ensemble", config)
    member = result.metrics["members"][0]
    shared = result.seconds - sum(m["epoch_seconds_total"] for m in result.metrics["members"])
    shutil.rmtree(work / "models" / "ensemble", ignore_errors=True)
    return _network_alone(ensemble.format(k=config.ensemble), result.metrics) | {
        single: {m: float(member["test"][m]) for m in METRICS}
        | {"train_seconds": shared + member["epoch_seconds_total"]}
        | {f"val_{m}": float(member["val"][m]) for m in VALIDATION_METRICS if m in member["val"]},
        ensemble.format(k=config.ensemble): {m: float(result.metrics["test"][m]) for m in METRICS}
        | {"train_seconds": result.seconds},
    }


def _network_alone(method: str, metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The scores of ``method``'s network without its tree evidence, as training recorded them
    (:func:`pipelines.training.calibrate.calibrate_and_test`); none for a model without trees."""
    alone = metrics.get("tree_evidence", {}).get("network_alone")
    if alone is None:
        return {}
    return {
        NETWORK_ALONE.format(method=method): {m: float(alone["test"][m]) for m in METRICS}
        | {f"val_{m}": float(alone["val"][m]) for m in VALIDATION_METRICS}
    }


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
        anchor_method = (
            GB if _compared_with_boosting(method) else DEEPWE if method in ABLATION_NAMES.values() else None
        )
        validation = [(f"val_{m}", label) for m, label in VALIDATION_METRICS.items()]
        for metric, label in (*METRICS.items(), *validation, ("train_seconds", "training seconds")):
            if not values[method][metric]:
                continue  # not measured for this method (results made before the metric existed)
            anchor = mean(anchor_method, metric) if anchor_method and metric in METRICS else None
            rows.append(result_row(benchmark, method, label, values[method][metric], anchor=anchor))
    for method in [m for m in values if _compared_with_boosting(m)]:
        if GB not in values:
            break
        for metric, label in (
            ("auroc", "test AUROC difference, same fold"),
            ("auprc", "test AUPRC difference, same fold"),
        ):
            difference = np.subtract(values[method][metric], values[GB][metric])
            rows.append(result_row(benchmark, f"{method} - {GB}", label, difference, anchor=0.0))
    return rows


def _compared_with_boosting(method: str) -> bool:
    """DeepWe with the default or tuned settings, alone or as an ensemble, with or without its tree
    evidence (not an ablation)."""
    method = method.removesuffix(NETWORK_ALONE.format(method=""))
    return method == DEEPWE or method.startswith(("DeepWe, ensemble", TUNED.format(name="")))


def verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain sentences: does DeepWe (and its ensemble) beat gradient boosting over the folds?"""
    sentences = []
    for row in rows:
        if not row["metric"].endswith("difference, same fold"):
            continue
        spread = 0.0 if row["sd"] is None else row["sd"]
        outcome = (
            "beats"
            if row["mean"] - spread > 0
            else "loses to"
            if row["mean"] + spread < 0
            else "is within one sd of"
        )
        metric = row["metric"].split(" difference")[0]
        who = row["method"].split(" - ")[0]
        sentences.append(
            f"{who} {outcome} gradient boosting on summary features: {metric} difference "
            f"{row['mean']:+.3f} ± {spread:.3f} (mean ± sd over {row['n']} folds)."
        )
    return " ".join(sentences)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = part_parser(
        "quality_p12",
        "PhysioNet 2012 in-hospital death, patient-level CV: DeepWe and its ablations against gradient "
        "boosting, logistic regression and SAPS-I on the same folds.",
        quick="5 folds of 500 stays, 3 epochs, half width",
    )
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default 5)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many stays (default all)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="most DeepWe epochs (default: deepwe train's)"
    )
    parser.add_argument(
        "--ensemble", type=int, default=None, help="k of the ensemble row; 0 = none (default 5)"
    )
    parser.add_argument(
        "--tuned",
        type=Path,
        default=None,
        help="a deepwe train --config YAML (e.g. deepwe tune's best.yaml): one more DeepWe row "
        "(and ensemble) with those settings",
    )
    parser.add_argument(
        "--ablations",
        type=subset_of(ABLATION_CHOICES, none=True),
        default=None,
        help=f"some of {','.join(ABLATION_CHOICES)}, or 'none' (default all)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        "folds": args.folds,
        "limit": args.limit,
        "epochs": args.epochs,
        "ensemble": args.ensemble,
        "ablations": args.ablations,
        "tuned": args.tuned,
    }

    def report(settings: Settings, rows: list[dict[str, Any]]) -> str:
        lines = []
        for row in rows:
            sd = "" if row["sd"] is None else f" ± {row['sd']:.3f}"
            anchor = "" if row["anchor"] is None else f" (anchor {row['anchor']:.3f})"
            lines.append(f"{row['method']:<60} {row['metric']:<36} {row['mean']:.3f}{sd}{anchor}")
        return "\n".join([*lines, verdict(rows)])

    try:
        return run_part(
            "quality_p12",
            args,
            argv,
            Settings,
            overrides,
            run,
            report,
            rows_facts=lambda rows: {"verdict": verdict(rows)},
        )
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
