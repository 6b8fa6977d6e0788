"""PhysioNet 2012: the variables DeepWe's feature weights rank highest, against gradient boosting.

On one fold of the suite's PhysioNet 2012 CV (:mod:`benchmarks.quality_p12`), DeepWe is trained with
``deepwe train``'s defaults (or the settings of ``--config YAML``) and gradient boosting on the summary features. For every test patient
the feature weight of each observed token is read from DeepWe's output; a token's importance is its
mean over the patients where it was observed. Gradient boosting's importance of a feature is its
permutation importance (drop in test AUROC, 5 repeats). Both are summed per variable (a sensor
channel or a static variable) and compared by Spearman rank correlation over the variables both
rank, and token by token over the statistics both have (first, last, min, max, mean, count).

    python -m benchmarks.p12_weights [--fold 0] [--work DIR] [--config YAML]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance

from benchmarks.baselines import (
    GB_PARAMS,
    P12_OUTCOME,
    by_split,
    fit_gradient_boosting,
    p12_cohort,
    train_deepwe,
)
from benchmarks.command_line import part_parser
from benchmarks.options import log_to_console
from benchmarks.paths import results_path
from benchmarks.summary_features import cohort_features
from benchmarks.unimodal import REPO, SHARED_DATA, kfold_splits, split_cohort
from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import prepare_cohort
from pipelines.common.json_values import json_text
from pipelines.training.train_config import TrainConfig

WORK = REPO / "runs" / "bench" / "p12_weights"
TOP = 10


def deepwe_token_weights(bundle_path: Path, cohort: Cohort) -> dict[str, float]:
    """Token name -> mean feature weight over the test patients where the token was observed."""
    bundle = load_bundle(bundle_path)
    prepared = prepare_cohort(cohort)
    loader = torch.utils.data.DataLoader(
        prepared.dataset("test"), batch_size=64, collate_fn=PatientCollator(bundle.model.encoders)
    )
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    with torch.no_grad():
        for batch in loader:
            output = bundle.model(batch)
            for name, weights in output.feature_weights.items():
                mask = output.token_masks[name]
                tokens = batch.inputs[name].names[0]
                for t, token in enumerate(tokens):
                    observed = mask[:, t]
                    total[token] += float(weights[observed, t].sum())
                    count[token] += int(observed.sum())
    return {token: total[token] / count[token] for token in total if count[token]}


def variable_of(name: str) -> str:
    """``"HR (last)"`` and ``"timeseries:HR:last"`` -> ``"HR"``; ``"static:Age"`` -> ``"Age"``."""
    if ":" in name:
        return name.split(":")[1]
    return name.split(" (")[0]


def token_key(name: str) -> str | None:
    """A name both models share: ``"HR (last)"`` and ``"timeseries:HR:last"`` -> ``"HR (last)"``."""
    parts = name.split(":")
    if len(parts) == 3:
        return f"{parts[1]} ({parts[2]})"
    if len(parts) == 2:
        return parts[1]
    return name


def compare(weights: dict[str, float], importance: dict[str, float]) -> dict[str, object]:
    """Top tokens of each and Spearman correlations per variable and per shared token."""
    per_variable_w: dict[str, float] = defaultdict(float)
    per_variable_i: dict[str, float] = defaultdict(float)
    for token, w in weights.items():
        per_variable_w[variable_of(token)] += w
    for feature, value in importance.items():
        per_variable_i[variable_of(feature)] += value
    variables = sorted(set(per_variable_w) & set(per_variable_i))
    shared = {token_key(f): v for f, v in importance.items()}
    tokens = sorted(set(weights) & set(shared))
    by_variable = spearmanr([per_variable_w[v] for v in variables], [per_variable_i[v] for v in variables])
    by_token = spearmanr([weights[t] for t in tokens], [shared[t] for t in tokens])
    return {
        "deepwe_top_tokens": sorted(weights.items(), key=lambda kv: -kv[1])[:TOP],
        "gb_top_features": sorted(((token_key(k), v) for k, v in importance.items()), key=lambda kv: -kv[1])[
            :TOP
        ],
        "spearman_variables": {"rho": float(by_variable.statistic), "n": len(variables)},
        "spearman_tokens": {"rho": float(by_token.statistic), "n": len(tokens)},
    }


def run(fold: int, work: Path, seed: int = 0, config: Path | None = None) -> dict[str, object]:
    """Train DeepWe on one fold (``deepwe train``'s defaults, or the settings of the ``config``
    YAML) unless its bundle is in ``work``, and compare its weights with gradient boosting's
    permutation importance on the fold's test split."""
    spec_path, table = p12_cohort(SHARED_DATA, work, None, seed)
    splits = kfold_splits(table[P12_OUTCOME].tolist(), 5, seed)
    split = splits[fold]
    cohort = split_cohort(spec_path, table, split)
    bundle = work / (f"model-{fold}" if config is None else f"model-{fold}-{config.stem}")
    if not (bundle / "manifest.json").is_file():
        settings = TrainConfig() if config is None else TrainConfig.from_yaml(config)
        train_deepwe(cohort, bundle, replace(settings, seed=seed, text_cache=str(work / ".text-cache")))
    weights = deepwe_token_weights(bundle, cohort)
    features = cohort_features(cohort).frame.loc[table["RecordID"]]
    labels = table[P12_OUTCOME].astype(int).to_numpy()
    y = {s: labels[split == s] for s in ("train", "val", "test")}
    x = by_split(features, split)
    trees = fit_gradient_boosting(x, y, seed).chosen["trees"]
    model = HistGradientBoostingClassifier(**(GB_PARAMS | {"max_iter": trees}), random_state=seed)
    model.fit(x["train"], y["train"])
    permuted = permutation_importance(
        model, x["test"], y["test"], scoring="roc_auc", n_repeats=5, random_state=seed
    )
    importance = dict(zip(features.columns, permuted.importances_mean, strict=True))
    return compare(weights, importance) | {"fold": fold, "config": None if config is None else config.name}


def main(argv: Sequence[str] | None = None) -> int:
    parser = part_parser("p12_weights", __doc__.split("\n")[0], quick="(no quick version: the same run)")
    parser.add_argument("--fold", type=int, default=0, help="which of the 5 folds (default 0)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a deepwe train --config YAML for DeepWe (default: deepwe train's defaults)",
    )
    args = parser.parse_args(argv)
    out = results_path("p12_weights", quick=False) if args.out is None else args.out
    log_to_console()
    try:
        result = run(args.fold, args.work, config=args.config)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json_text(result), encoding="utf-8")
    print("DeepWe: top feature weights (mean over test patients where observed)")
    for token, weight in result["deepwe_top_tokens"]:
        print(f"  {token:<28} {weight:.3f}")
    print("Gradient boosting: top permutation importances (test AUROC drop)")
    for token, value in result["gb_top_features"]:
        print(f"  {token:<28} {value:.4f}")
    v, t = result["spearman_variables"], result["spearman_tokens"]
    print(f"Spearman per variable {v['rho']:.2f} (n={v['n']}); per shared token {t['rho']:.2f} (n={t['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
