"""Evidence on real data: each encoder alone, with a linear head, on its own real dataset.

Every dataset goes through the project's own path: ``pipelines.sources.importers`` writes the cohort,
this script writes copies of its table with a ``split`` column (one per fold) beside a copy of the
spec that declares ``split: {column: split}`` and keeps ``data_root`` on the original files, and
``pipelines.training.train.train`` fits and scores each copy. Nothing here trains by itself.

"Encoder alone with a linear head" is a single-modality DeepWe model with every fusion extra switched
off (feature gates, modality attention, patient graph, contrastive and sparsity terms, modality
dropout): the modality's tokens are mean-pooled, go through the core's projection (Linear +
LayerNorm) and the mean-fusion LayerNorm, then one linear layer (after dropout) gives the logits. PhysioNet 2012 keeps
its two modalities (static tabular + 48 h series), fused by the mean of their pooled tokens: a late,
pooled, linear model.

Run from the repository root::

    python -m benchmarks.unimodal [--quick] [--datasets a,b] [--folds 5] [--out PATH]

Everything it writes goes under ``runs/bench/unimodal/`` (imports, fold cohorts, model bundles)
except the JSON of results (``benchmarks/results/{quick,full}/unimodal/results.json`` by default).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from benchmarks.command_line import output_path, part_parser
from benchmarks.options import log_to_console
from pipelines.api import checked_cohort
from pipelines.cohorts.cohort_table import Cohort, load_cohort
from pipelines.common.json_values import json_text
from pipelines.sources.importers import import_dataset
from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("deepwe.bench.unimodal")
notes = logging.getLogger("benchmarks.notes")  # lines the suite prints under this part's tables

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPWE_SHARED_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "runs" / "bench" / "unimodal"
SPLIT_COLUMN = "split"
METRIC = "test AUROC"

# The fusion core reduced to mean pooling -> projection -> linear head (see the module docstring).
LINEAR_HEAD_FUSION: dict[str, Any] = {
    "use_feature_gates": False,
    "use_modality_attention": False,
    "use_graph": False,
    "use_contrastive": False,
    "use_sparsity": False,
    "modality_dropout": 0.0,
    "lambda_teacher": 0.0,  # the encoder alone: no gradient-boosting teacher
}
METHOD_NOTE = (
    "encoder alone + linear head: DeepWe with feature gates, modality attention, patient graph, "
    "contrastive and sparsity terms, modality dropout and the gradient-boosting teacher off "
    "(mean-pooled tokens -> Linear+LayerNorm projection -> linear head); early stopping on "
    "validation AUROC; AUROC is unchanged by the "
    "temperature scaling fitted on the validation split"
)


@dataclass(frozen=True)
class Anchor:
    """A published or conventional figure to read ours against."""

    value: float
    source: str


@dataclass(frozen=True)
class Benchmark:
    """One dataset, its importer and how it is split.

    Attributes:
        key: the name on the command line.
        title: the dataset as printed.
        importer: the ``pipelines.sources.importers`` name.
        source: the importer's source, relative to the shared data folder.
        options: keyword options of the importer.
        method: the modality and encoder as printed.
        encoders: ``TrainConfig.encoders`` overrides, by modality kind.
        split: ``"official"`` (the cohort's own split column), ``"kfold"`` (stratified, patient-level
            folds: fold k test, fold k+1 val, the rest train) or ``"holdout"`` (one seeded,
            stratified, patient-level 70/15/15 split).
        anchor: the figure to compare with, if any.
    """

    key: str
    title: str
    importer: str
    source: str
    method: str
    split: str
    options: Mapping[str, Any] = field(default_factory=dict)
    encoders: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    anchor: Anchor | None = None


BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in (
        Benchmark(
            key="pneumoniamnist",
            title="PneumoniaMNIST (pneumonia vs normal)",
            importer="medmnist",
            source="medmnist/pneumoniamnist.npz",
            method="image: ResNet-18 (timm, from scratch) at 28 px",
            split="official",
            encoders={"image": {"backbone": "resnet18", "image_size": 28}},
            anchor=Anchor(0.944, "MedMNIST v2 paper, ResNet-18 (28), test AUC"),
        ),
        Benchmark(
            key="cinc2017",
            title="CinC 2017 (AF vs rest)",
            importer="cinc2017",
            source="cinc2017",
            method="sensor: masked temporal CNN on single-lead ECG (resampled to 100 Hz, first 30 s)",
            split="kfold",
            options={"task": "af", "sample_rate": 100.0, "duration_s": 30.0},
        ),
        Benchmark(
            key="physionet2012",
            title="PhysioNet 2012 (in-hospital death)",
            importer="physionet2012",
            source="physionet2012",
            method="sensor+tabular: temporal CNN on 48 h hourly grid + static tabular, late pooled linear",
            split="kfold",
            anchor=Anchor(0.86, "gradient boosting on summary features, AUROC about 0.86"),
        ),
        Benchmark(
            key="iu-xray",
            title="IU X-ray reports (abnormal vs normal)",
            importer="iu-xray",
            source="iu_xray_reports",
            method="text: frozen MiniLM-L6 sentence tokens",
            split="holdout",
        ),
    )
}


@dataclass(frozen=True)
class RunSettings:
    """How hard to train.

    Attributes:
        folds: folds of the ``kfold`` datasets (at least 3: test, val and train each take one).
        epochs, patience, batch_size, lr: passed to :class:`TrainConfig`.
        limit: keep at most this many patients per dataset (a stratified, seeded subset), or all.
        seed: seeds the folds, the subsets and training.
    """

    folds: int = 5
    epochs: int = 5
    patience: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 3:
            raise ValueError(f"folds must be at least 3 (test, val and train folds), got {self.folds}")
        if self.limit is not None and self.limit < 30:
            raise ValueError(f"limit must be at least 30 patients, got {self.limit}")

    @classmethod
    def quick(cls) -> RunSettings:
        """Subsets, three folds and two epochs: the whole benchmark in a few minutes on 2 cores."""
        return cls(folds=3, epochs=2, patience=2, limit=600)

    def train_config(self, benchmark: Benchmark, text_cache: Path) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            token_dim=64,
            encoders={kind: dict(fields) for kind, fields in benchmark.encoders.items()},
            fusion={**LINEAR_HEAD_FUSION, "hidden_dim": 64},
            text_cache=str(text_cache),
        )


@dataclass(frozen=True)
class FoldResult:
    """One trained model's test figures."""

    fold: int
    auroc: float
    n_train: int
    n_val: int
    n_test: int
    seconds: float
    epochs_run: int
    best_epoch: int


@dataclass(frozen=True)
class BenchmarkResult:
    """A dataset's folds (one for a fixed split)."""

    benchmark: Benchmark
    split: str
    folds: tuple[FoldResult, ...]
    settings: RunSettings

    @property
    def mean(self) -> float:
        return float(np.mean([f.auroc for f in self.folds]))

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over folds; None for a single split."""
        return float(np.std([f.auroc for f in self.folds], ddof=1)) if len(self.folds) > 1 else None

    @property
    def seconds(self) -> float:
        return float(sum(f.seconds for f in self.folds))

    def row(self) -> dict[str, Any]:
        """The JSON row: ``n`` is the number of test predictions scored, over all folds."""
        b = self.benchmark
        return {
            "benchmark": b.title,
            "method": b.method,
            "metric": METRIC,
            "mean": round(self.mean, 4),
            "sd": None if self.sd is None else round(self.sd, 4),
            "n": sum(f.n_test for f in self.folds),
            "anchor": None if b.anchor is None else {"value": b.anchor.value, "source": b.anchor.source},
            "details": {
                "dataset": b.key,
                "split": self.split,
                "folds": [
                    {
                        "fold": f.fold,
                        "auroc": round(f.auroc, 4),
                        "n_train": f.n_train,
                        "n_val": f.n_val,
                        "n_test": f.n_test,
                        "epochs_run": f.epochs_run,
                        "best_epoch": f.best_epoch,
                        "seconds": round(f.seconds, 1),
                    }
                    for f in self.folds
                ],
                "train_seconds": round(self.seconds, 1),
                "settings": {
                    "epochs": self.settings.epochs,
                    "patience": self.settings.patience,
                    "batch_size": self.settings.batch_size,
                    "lr": self.settings.lr,
                    "limit": self.settings.limit,
                    "seed": self.settings.seed,
                    "importer_options": dict(b.options),
                    "encoders": {k: dict(v) for k, v in b.encoders.items()},
                    "fusion": LINEAR_HEAD_FUSION,
                },
                "note": METHOD_NOTE,
            },
        }


def shuffled_by_outcome(labels: Sequence[str], seed: int) -> list[np.ndarray]:
    """Per outcome value (sorted), its row indices in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=object)
    return [rng.permutation(np.flatnonzero(labels == value)) for value in sorted(set(labels))]


def kfold_splits(labels: Sequence[str], folds: int, seed: int) -> list[np.ndarray]:
    """Per fold k, the split of every row: fold k ``test``, fold k+1 ``val``, the others ``train``.

    Folds are stratified by outcome (each outcome dealt round-robin, continuing where the previous
    one stopped, so fold sizes differ by at most one) and seeded. Each row is one patient, so the
    folds are patient-level and every patient is in exactly one test fold.

    Returns:
        ``folds`` arrays of shape (N,) holding ``"train"``, ``"val"`` or ``"test"``.
    """
    fold_of = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for rows in shuffled_by_outcome(labels, seed):
        fold_of[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    splits = []
    for k in range(folds):
        split = np.full(len(labels), "train", dtype=object)
        split[fold_of == (k + 1) % folds] = "val"
        split[fold_of == k] = "test"
        splits.append(split)
    return splits


def holdout_split(
    labels: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> np.ndarray:
    """One stratified, seeded, patient-level train/val/test split.

    Returns:
        (N,) ``"train"``, ``"val"`` or ``"test"`` per row, in the proportions ``fractions`` within
        every outcome.
    """
    split = np.full(len(labels), "test", dtype=object)
    for rows in shuffled_by_outcome(labels, seed):
        n_train = round(len(rows) * fractions[0])
        n_val = round(len(rows) * (fractions[0] + fractions[1])) - n_train
        split[rows[:n_train]] = "train"
        split[rows[n_train : n_train + n_val]] = "val"
    return split


def subset(table: pd.DataFrame, outcome: str, limit: int, seed: int, by: str | None = None) -> pd.DataFrame:
    """About ``limit`` rows (rounded per stratum), stratified by outcome and by ``by``, seeded.

    Returns:
        The kept rows of ``table`` in their original order (``table`` itself when it is small enough).
    """
    if len(table) <= limit:
        return table
    strata = table[outcome].astype(str) if by is None else table[by].astype(str) + "|" + table[outcome]
    keep = [
        rows[: max(1, round(limit * len(rows) / len(table)))] for rows in shuffled_by_outcome(strata, seed)
    ]
    return table.iloc[np.sort(np.concatenate(keep))]


def split_cohort(spec_path: Path, table: pd.DataFrame, split: Sequence[str]) -> Cohort:
    """The cohort at ``spec_path`` cut to the rows of ``table``, with ``split`` as its split column,
    held in memory: file paths resolve where the original's do and nothing is written.

    Args:
        spec_path: the importer's ``cohort.yaml``.
        table: the rows to keep, with the original's columns.
        split: (len(table),) ``train`` / ``val`` / ``test``.
    """
    original = load_cohort(spec_path)
    kept = Cohort.from_frame(table, original.spec, root=original.folder)
    return kept.split(list(split), column=SPLIT_COLUMN)


def fold_cohorts(
    benchmark: Benchmark, spec_path: Path, settings: RunSettings
) -> tuple[str, list[tuple[str, Cohort]]]:
    """The cohorts a benchmark trains on, in memory: the split's description and (name, cohort) per
    fold."""
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    outcome = spec["outcome"]["column"]
    table = pd.read_csv(spec_path.parent / spec["table"], dtype=str, keep_default_na=False)
    dropped = int((table[outcome].str.strip() == "").sum())
    table = table[table[outcome].str.strip() != ""].reset_index(drop=True)
    if dropped:
        log.info("%s: %d rows without an outcome left out", benchmark.key, dropped)
    official = benchmark.split == "official"
    if settings.limit is not None:
        table = subset(
            table, outcome, settings.limit, settings.seed, by=SPLIT_COLUMN if official else None
        ).reset_index(drop=True)
    labels = table[outcome].tolist()
    limited = f", stratified subset of {len(table)}" if settings.limit is not None else ""
    if official:
        return f"official train/val/test{limited}", [
            ("official", split_cohort(spec_path, table, table[SPLIT_COLUMN].tolist()))
        ]
    if benchmark.split == "holdout":
        split = holdout_split(labels, settings.seed)
        return f"seeded stratified 70/15/15 holdout{limited}", [
            ("holdout", split_cohort(spec_path, table, split))
        ]
    splits = kfold_splits(labels, settings.folds, settings.seed)
    return f"{settings.folds}-fold stratified CV (test k, val k+1){limited}", [
        (f"fold-{k}", split_cohort(spec_path, table, split)) for k, split in enumerate(splits)
    ]


def run_benchmark(
    benchmark: Benchmark, settings: RunSettings, *, work: Path = WORK, data: Path = SHARED_DATA
) -> BenchmarkResult:
    """Import one dataset, make its fold cohorts (in memory), train and score every fold.

    Raises:
        ValueError: the dataset's source is absent under ``data`` or not what its importer expects.
    """
    source = data / benchmark.source
    if not source.exists():
        raise ValueError(f"{source}: the {benchmark.title} data is not there (see ../shared/data)")
    imported = import_dataset(
        benchmark.importer, source, work / "imports" / benchmark.key, **benchmark.options
    )
    log.info("%s: imported %d rows %s", benchmark.key, imported.rows, imported.outcome_counts)
    described, cohorts = fold_cohorts(benchmark, imported.spec_path, settings)
    config = settings.train_config(benchmark, work.parent / ".text-cache")
    folds = []
    for k, (name, cohort) in enumerate(cohorts):
        result = train(
            cohort.spec_path,
            work / "models" / benchmark.key / name,
            config,
            device="cpu",
            progress=False,
            cohort=checked_cohort(cohort),
        )
        sizes = result.metrics["split_sizes"]
        fold = FoldResult(
            fold=k,
            auroc=float(result.metrics["test"]["auroc"]),
            n_train=sizes["train"],
            n_val=sizes["val"],
            n_test=sizes["test"],
            seconds=result.seconds,
            epochs_run=result.epochs_run,
            best_epoch=int(result.metrics["best_epoch"]),
        )
        log.info(
            "%s %s: test AUROC %.4f (train %d, val %d, test %d; %d epochs, best %d; %.0f s)",
            benchmark.key,
            name,
            fold.auroc,
            fold.n_train,
            fold.n_val,
            fold.n_test,
            fold.epochs_run,
            fold.best_epoch,
            fold.seconds,
        )
        folds.append(fold)
    return BenchmarkResult(benchmark, described, tuple(folds), settings)


def markdown_table(results: Sequence[BenchmarkResult]) -> str:
    """The results as a Markdown table, one row per dataset."""
    lines = [
        "| dataset | modality / encoder | split | n train / test | test AUROC (mean ± sd) | anchor | training time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sizes = f"{_span(f.n_train for f in r.folds)} / {_span(f.n_test for f in r.folds)}"
        if len(r.folds) > 1:
            sizes += f" per fold ({len(r.folds)} folds)"
        auroc = f"{r.mean:.3f}" + ("" if r.sd is None else f" ± {r.sd:.3f}")
        anchor = r.benchmark.anchor
        anchor_text = "—" if anchor is None else f"{anchor.value:.3f} ({anchor.source})"
        lines.append(
            f"| {r.benchmark.title} | {r.benchmark.method} | {r.split} | {sizes} | {auroc} | "
            f"{anchor_text} | {_duration(r.seconds)} |"
        )
    return "\n".join(lines)


def _span(values: Iterable[int]) -> str:
    """``564`` or ``564-565``."""
    values = sorted(values)
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}-{values[-1]}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_results(results: Sequence[BenchmarkResult], path: Path) -> None:
    """Write ``{"rows": [...], "run": {...}}``: rows ``{benchmark, method, metric, mean, sd, n, anchor,
    details}`` (the folds in ``details``), and the run's datasets and torch threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {
        "script": "unimodal",
        "datasets": [r.benchmark.key for r in results],
        "torch_threads": torch.get_num_threads(),
    }
    path.write_text(json_text({"rows": [r.row() for r in results], "run": run}), encoding="utf-8")


def select(keys: Sequence[str], data: Path = SHARED_DATA) -> list[Benchmark]:
    """The benchmarks named by ``keys``, checked before anything runs.

    Raises:
        ValueError: an unknown key (with the known ones), or a dataset absent under ``data``.
    """
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; known: {', '.join(BENCHMARKS)}")
    absent = [str(data / BENCHMARKS[k].source) for k in keys if not (data / BENCHMARKS[k].source).exists()]
    if absent:
        raise ValueError(f"the data of these benchmarks is not there: {', '.join(absent)}")
    return [BENCHMARKS[k] for k in keys]


def run_benchmarks(
    benchmarks: Sequence[Benchmark],
    settings: RunSettings,
    *,
    work: Path = WORK,
    data: Path = SHARED_DATA,
    out: Path | None = None,
) -> list[BenchmarkResult]:
    """Run ``benchmarks`` in order, rewriting ``out`` (if given) after each."""
    results = []
    for benchmark in benchmarks:
        results.append(run_benchmark(benchmark, settings, work=work, data=data))
        if out is not None:  # a crash later keeps what is done
            write_results(results, out)
    return results


def suite_rows(results: Sequence[BenchmarkResult]) -> list[dict[str, Any]]:
    """The suite's rows of ``results`` (:mod:`benchmarks.rows`): the anchor as its value; the folds
    stay in the part's own JSON."""
    keys = ("benchmark", "method", "metric", "mean", "sd", "n")
    return [
        {key: r.row()[key] for key in keys}
        | {"anchor": None if r.benchmark.anchor is None else r.benchmark.anchor.value}
        for r in results
    ]


def run(quick: bool, work: Path, data: Path = SHARED_DATA) -> list[dict[str, Any]]:
    """The suite part: every benchmark whose data is under ``data`` (the others are named in a note);
    :meth:`RunSettings.quick` or the full settings."""
    present = [b for b in BENCHMARKS.values() if (data / b.source).exists()]
    absent = [b.title for b in BENCHMARKS.values() if b not in present]
    if absent:
        notes.info(
            "Each encoder alone: no data for %s under %s; those rows are absent.", ", ".join(absent), data
        )
    settings = RunSettings.quick() if quick else RunSettings()
    return suite_rows(run_benchmarks(present, settings, work=work, data=data))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = part_parser(
        "unimodal",
        "Each encoder alone with a linear head on its real dataset: test AUROC.",
        quick="subsets, 3 folds, 2 epochs (a few minutes)",
    )
    parser.add_argument(
        "--datasets", default=",".join(BENCHMARKS), help=f"comma-separated, from {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--folds", type=int, default=None, help="folds of the CV datasets (default 5; 3 quick)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="most epochs per model (default 5; 2 quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="patients per step (default 64)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: the cores are shared)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_to_console()
    settings = RunSettings.quick() if args.quick else RunSettings()
    if args.folds is not None:
        settings = replace(settings, folds=args.folds)
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.batch_size is not None:
        settings = replace(settings, batch_size=args.batch_size)
    try:
        benchmarks = select([k.strip() for k in args.datasets.split(",") if k.strip()])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Several processes share the cores here; one thread each avoids oversubscription stalls.
    torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    out = output_path(args, "unimodal")
    results = run_benchmarks(benchmarks, settings, work=args.work, out=out)
    print(f"\n{METHOD_NOTE}.\n")
    print(markdown_table(results))
    minutes = (time.perf_counter() - started) / 60
    print(f"\nwrote {out} ({minutes:.1f} min in all)")
    return 0 if all(math.isfinite(r.mean) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
