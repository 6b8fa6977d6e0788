"""``deepwe tune``: search the few training settings that matter, on the validation split only.

Each trial trains a model with settings drawn by Optuna's TPE sampler on the training split and is
scored on the validation split (AUROC before calibration; log-loss breaks ties in the table). The
test split is never read: trials see a copy of the cohort with its test rows removed. The best
settings are written as a YAML file that ``deepwe train --config`` takes, next to a table of every
trial.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.prepare import validated_cohort
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.tune")

SEARCH_SPACE = {
    "lr": "log-uniform 3e-4 .. 3e-3",
    "weight_decay": "log-uniform 1e-6 .. 1e-2",
    "token_dim": "32, 48 or 64",
    "fusion.hidden_dim": "32, 64 or 96",
    "fusion.token_layers": "0, 1 or 2",
    "fusion.projection": "linear or mlp",
    "fusion.dropout": "0 .. 0.3",
    "fusion.lambda_contrastive": "0 .. 0.3",
    "fusion.lambda_sparsity": "log-uniform 1e-3 .. 0.05",
    "fusion.lambda_teacher": "0 .. 10",
}
"""What :func:`tune` searches, and over which range (for ``--help`` and docs/model.md)."""


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` wrote.

    Attributes:
        best_config: the YAML file of the best trial's settings.
        trials_table: the CSV table of every trial (settings, validation AUROC and log-loss, seconds).
        best: the best trial's row of that table.
        trials: how many trials finished.
    """

    best_config: Path
    trials_table: Path
    best: dict[str, Any]
    trials: int


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"2h"`` or a plain number of seconds.

    Raises:
        ValueError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise ValueError(f"expected a duration such as 90s, 30m or 2h, got {text!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def without_test_rows(cohort: Cohort) -> Cohort:
    """The cohort minus its test split (what tuning may see)."""
    keep = [r.row - 1 for r in cohort.records() if r.split != "test"]
    return Cohort(cohort.spec, cohort.spec_path, cohort.table.iloc[keep].reset_index(drop=True))


def suggest(trial: Any, base: TrainConfig) -> TrainConfig:
    """A :class:`TrainConfig` with the :data:`SEARCH_SPACE` settings drawn for ``trial``."""
    fusion = dict(base.fusion) | {
        "hidden_dim": trial.suggest_categorical("fusion.hidden_dim", [32, 64, 96]),
        "token_layers": trial.suggest_categorical("fusion.token_layers", [0, 1, 2]),
        "projection": trial.suggest_categorical("fusion.projection", ["linear", "mlp"]),
        "dropout": trial.suggest_float("fusion.dropout", 0.0, 0.3),
        "lambda_contrastive": trial.suggest_float("fusion.lambda_contrastive", 0.0, 0.3),
        # Above about 0.05 the gates of a cohort with hundreds of tokens (PhysioNet 2012) close
        # together and the model learns from almost nothing: not worth a trial.
        "lambda_sparsity": trial.suggest_float("fusion.lambda_sparsity", 1e-3, 0.05, log=True),
        "lambda_teacher": trial.suggest_float("fusion.lambda_teacher", 0.0, 10.0),
    }
    heads = fusion.get("n_heads", 4)
    fusion["n_heads"] = next(h for h in range(heads, 0, -1) if fusion["hidden_dim"] % h == 0)
    return replace(
        base,
        lr=trial.suggest_float("lr", 3e-4, 3e-3, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        token_dim=trial.suggest_categorical("token_dim", [32, 48, 64]),
        fusion=fusion,
        ensemble=1,
    )


def tune(
    spec_path: str | Path,
    out: str | Path,
    base: TrainConfig | None = None,
    *,
    trials: int = 20,
    time_budget_s: float | None = None,
    device: str = "auto",
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Run up to ``trials`` trials (or until ``time_budget_s`` runs out) and write the best settings.

    Args:
        spec_path: the cohort spec; it must pass ``deepwe validate``.
        out: folder for ``best.yaml`` and ``trials.csv``.
        base: settings that are not searched (epochs, batch size, encoders...), default
            :class:`TrainConfig`.
        on_trial: called with each finished trial's table row (for progress output).

    Raises:
        SpecError: the cohort does not validate.
        CohortError: the cohort cannot be trained on.
        ValueError: ``trials`` < 1.
    """
    import optuna

    from pipelines.training.train import train

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    base = base or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = without_test_rows(validated_cohort(spec_path))
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="trials-", dir=out))

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, replace(base, text_cache=base.text_cache or str(out / ".text-cache")))
        started = time.perf_counter()
        result = train(
            spec_path, scratch / f"trial-{trial.number}", config, device=device, progress=False, cohort=cohort
        )
        val = result.metrics["val_uncalibrated"]
        row = {"trial": trial.number, **trial.params}
        row |= {"val_auroc": val["auroc"], "val_log_loss": val.get("log_loss", math.nan)}
        row |= {"epochs": result.epochs_run, "seconds": round(time.perf_counter() - started, 1)}
        row["test_patients_seen"] = result.metrics["split_sizes"]["test"]
        rows.append(row)
        shutil.rmtree(scratch / f"trial-{trial.number}", ignore_errors=True)
        if on_trial is not None:
            on_trial(row)
        auroc = val["auroc"]
        return auroc if math.isfinite(auroc) else 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed))
    try:
        study.optimize(objective, n_trials=trials, timeout=time_budget_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = pd.DataFrame(rows).sort_values(["val_auroc", "val_log_loss"], ascending=[False, True])
    table_path = out / "trials.csv"
    table.to_csv(table_path, index=False)
    best = suggest(optuna.trial.FixedTrial(study.best_params), base)
    best_path = out / "best.yaml"
    header = (
        f"# The best of {len(rows)} trials of `deepwe tune` (validation AUROC {study.best_value:.4f}); "
        "use it with `deepwe train --config`.\n"
    )
    settings = {k: v for k, v in best.to_dict().items() if v != getattr(TrainConfig(), k)}
    best_path.write_text(header + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return TuneResult(best_path, table_path, table.iloc[0].to_dict(), len(rows))
