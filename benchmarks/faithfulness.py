"""Are DeepWe's explanations faithful? Deletion/insertion AUC of IG, gradient x input, random.

Deletion and insertion curves (Petsiuk et al., BMVC 2018) follow the model's score while the tokens
of a patient are removed (set to their modality's baseline) in the order a ranking gives, or added to
an all-baseline input in that order. A ranking that says what the model does makes the deletion
curve fall faster (lower area) and the insertion curve rise faster (higher area) than random orders.

Per dataset, DeepWe is trained with seeds 0, 1, 2 on one fixed split, and for every seed the same
test patients are explained. Per patient, the units are the tokens of all its present modalities
together (:func:`pipelines.explanations.modality_attribution.token_curves`, as in the audit report), ranked three ways:

- Integrated Gradients (the attribution ``deepwe explain`` shows), summed per token;
- gradient x input on the same input, layer and baseline (:func:`explain.attribution.gradient_x_input`);
- random orders (the mean of a few per patient; the same orders whichever attribution is scored).

The score is the calibrated log-odds of the positive class, and an AUC is its area over the
fraction of tokens removed or kept (0 to 1), in log-odds units. Per seed the AUCs are averaged over
the explained patients; a row is the mean ± sd of those per-seed means over the seeds, with the
random orders' mean as the anchor of the IG and gradient x input rows.

Datasets:

- ``faithfulness, synthetic``: a ``deepwe synth`` cohort (seed 0, 20% of modalities missing, all six
  modalities, the generator's own split) and the model sizes of ``configs/bench/synth.yaml``.
- ``faithfulness, PhysioNet 2012``: set A imported with ``pipelines.sources.importers`` (static tabular +
  48 h series), optionally a stratified subset, one seeded stratified 70/15/15 split; the model
  sizes of ``configs/bench/p12.yaml``. Skipped, with a note, when the data folder is absent.

``--quick`` (the suite's quick mode) uses small cohorts, one epoch, tiny model sizes, a few patients
and few IG steps: it shows that every path runs, not figures to quote.

Run from the repository root::

    python -m benchmarks.faithfulness [--quick] [--work DIR] [--out PATH]
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.baselines import P12_OUTCOME, p12_cohort, synthetic_cohort, train_deepwe
from benchmarks.command_line import add_datasets_option, part_parser, run_part
from benchmarks.options import torch_threads
from benchmarks.paths import bench_config
from benchmarks.rows import result_row
from benchmarks.unimodal import REPO, SHARED_DATA, holdout_split, split_cohort
from explain.attribution import GRADIENT_X_INPUT, INTEGRATED_GRADIENTS
from explain.faithfulness_measures import Curves
from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.cohorts.cohort_table import Cohort, load_cohort
from pipelines.explanations.explaining import patient_position, read_patient
from pipelines.explanations.modality_attribution import explain_modalities, token_curves
from pipelines.explanations.patient_scorer import PatientScorer, positive_index
from pipelines.training.train_config import TrainConfig

log = logging.getLogger("benchmarks.faithfulness")
notes = logging.getLogger("benchmarks.notes")  # lines the suite prints under this part's tables

WORK = REPO / "runs" / "bench" / "faithfulness"
SYNTHETIC = "synthetic"
P12 = "physionet2012"
DATASETS = (SYNTHETIC, P12)
TITLES = {SYNTHETIC: "faithfulness, synthetic", P12: "faithfulness, PhysioNet 2012"}
IG = "integrated gradients"
GXI = "gradient x input"
RANDOM = "random order"
RANKED_BY = {INTEGRATED_GRADIENTS: IG, GRADIENT_X_INPUT: GXI}
"""Attribution method (:mod:`explain.attribution`) -> its name in the result rows."""
DELETION = "deletion AUC"
INSERTION = "insertion AUC"
VERSUS_RANDOM = " minus random"
"""Suffix of the paired metrics: a ranking's AUC minus the random orders' on the same patients."""

QUICK_MODEL: dict[str, Any] = {
    "token_dim": 16,
    "encoders": {
        "image": {"backbone": "test_resnet", "image_size": 32},
        "audio": {"channels": [4, 8], "n_mels": 12, "n_fft": 128, "hop_length": 64},
        "sensor": {"hidden": 16},
        "text": {"max_chunks": 2},
    },
    "fusion": {"hidden_dim": 24, "n_heads": 2, "graph_top_k": 5, "memory_size": 32},
}
"""The model sizes of ``--quick`` (``TrainConfig`` fields): enough to run every path in seconds."""


@dataclass(frozen=True)
class Settings:
    """How much to run.

    Attributes:
        datasets: which of :data:`DATASETS`.
        seeds: training seeds 0 .. seeds-1, all on the same split.
        synth_n: patients of the synthetic cohort.
        p12_limit: keep at most this many PhysioNet 2012 stays (stratified subset, seed 0), or all.
        epochs, patience: DeepWe training length (early stopping on validation AUROC).
        patients: test patients explained per seed (the same ones for every seed).
        ig_steps: Integrated Gradients steps.
        curve_steps: points on each deletion/insertion curve beyond the origin.
        random_orders: random orders averaged per patient.
        quick_model: use :data:`QUICK_MODEL` sizes instead of those of the PhysioNet 2012 and synthetic comparison.
        torch_threads: intra-op threads while the part runs (restored after); None = leave as is.
    """

    datasets: tuple[str, ...] = DATASETS
    seeds: int = 3
    synth_n: int = 1000
    p12_limit: int | None = 2000
    epochs: int = 10
    patience: int = 3
    patients: int = 30
    ig_steps: int = 32
    curve_steps: int = 10
    random_orders: int = 5
    quick_model: bool = False
    torch_threads: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        """Both datasets and three seeds, but small cohorts, one epoch and three patients per seed."""
        return cls(
            synth_n=100,
            p12_limit=150,
            epochs=1,
            patience=1,
            patients=3,
            ig_steps=4,
            curve_steps=5,
            random_orders=3,
            quick_model=True,
        )

    def train_config(self, dataset: str, seed: int, text_cache: Path) -> TrainConfig:
        """DeepWe's training settings for ``dataset``: ``configs/bench/p12.yaml`` or ``synth.yaml``
        (the sizes of the PhysioNet 2012 and synthetic comparisons) unless quick."""
        config = bench_config(
            "p12" if dataset == P12 else "synth",
            epochs=self.epochs,
            patience=self.patience,
            seed=seed,
            text_cache=str(text_cache),
        )
        return replace(config, **QUICK_MODEL) if self.quick_model else config


@dataclass(frozen=True)
class Dataset:
    """A cohort with its fixed split and the test patients every seed explains.

    Attributes:
        key: one of :data:`DATASETS`.
        cohort: the cohort (its table has the split column).
        explained: patient ids, the same for every seed.
        size: patients in the cohort; split_sizes: train/val/test counts.
    """

    key: str
    cohort: Cohort
    explained: tuple[str, ...]
    size: int
    split_sizes: dict[str, int]


def explained_patients(ids: Sequence[str], count: int, seed: int = 0) -> tuple[str, ...]:
    """``count`` of ``ids`` in a seeded random order (all of them when there are fewer)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return tuple(str(ids[i]) for i in order[:count])


def _dataset(key: str, cohort: Cohort, settings: Settings) -> Dataset:
    records = list(cohort.records())
    split = [r.split for r in records]
    test = [r.patient_id for r in records if r.split == "test"]
    return Dataset(
        key,
        cohort,
        explained_patients(test, settings.patients),
        len(records),
        {s: split.count(s) for s in ("train", "val", "test")},
    )


def synthetic_dataset(settings: Settings, work: Path) -> Dataset:
    """The ``deepwe synth`` cohort of :func:`benchmarks.baselines.synthetic_cohort`."""
    spec = synthetic_cohort(settings.synth_n, work / "cohorts" / f"synth-n{settings.synth_n}")
    return _dataset(SYNTHETIC, load_cohort(spec), settings)


def p12_dataset(settings: Settings, work: Path, data: Path = SHARED_DATA) -> Dataset | None:
    """PhysioNet 2012 set A with one stratified split (seed 0), or None when the data is absent."""
    try:
        spec_path, table = p12_cohort(data, work, settings.p12_limit)
    except FileNotFoundError:
        return None
    split = holdout_split(table[P12_OUTCOME].tolist(), seed=0)
    return _dataset(P12, split_cohort(spec_path, table, split), settings)


# --- one patient ---------------------------------------------------------------------------------


def patient_curves(
    bundle: Bundle,
    cohort: Cohort,
    patient_id: str,
    *,
    steps: int,
    curve_steps: int,
    random_orders: int,
) -> dict[str, Curves]:
    """Deletion/insertion curves over the patient's tokens, per attribution method of :data:`RANKED_BY`.

    Every method's curves carry the same random-order curves (same orders, same scorer).

    Raises:
        ValueError: the patient's row cannot be predicted (the prediction's error says why).
    """
    sample, batch, prediction = read_patient(bundle, cohort, patient_position(cohort, patient_id))
    if prediction.status != "ok":
        raise ValueError(f"patient {patient_id!r} cannot be explained: {prediction.error}")
    bundle.model.eval()
    score = PatientScorer(bundle, batch, positive_index(bundle, prediction))
    with torch.no_grad():
        output = bundle.model(batch)
    curves = {}
    for method in RANKED_BY:
        explained, targets = explain_modalities(
            bundle, sample, batch, score, output, steps=steps, method=method
        )
        curves[method] = token_curves(
            batch, explained, targets, score, steps=curve_steps, random_orders=random_orders
        )
    return curves


def curve_aucs(curves: Mapping[str, Curves]) -> dict[str, dict[str, float]]:
    """Row method -> metric -> AUC for one patient: each attribution's curves, and the random orders'.

    Args:
        curves: attribution method (a key of :data:`RANKED_BY`) -> its curves for the patient.
    """
    aucs = {
        RANKED_BY[m]: {DELETION: c.aucs["deletion"], INSERTION: c.aucs["insertion"]}
        for m, c in curves.items()
    }
    first = next(iter(curves.values())).aucs
    aucs[RANDOM] = {DELETION: first["random_deletion"], INSERTION: first["random_insertion"]}
    return aucs


def mean_aucs(patients: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Method -> metric -> the mean over patients of :func:`curve_aucs` results."""
    return {
        method: {metric: float(np.mean([p[method][metric] for p in patients])) for metric in metrics}
        for method, metrics in patients[0].items()
    }


# --- one seed, one dataset -------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedResult:
    """One trained model's figures: method -> metric -> mean AUC over the explained patients."""

    seed: int
    aucs: dict[str, dict[str, float]]
    patients: int
    test_auroc: float
    train_seconds: float
    explain_seconds: float


def run_seed(dataset: Dataset, settings: Settings, seed: int, work: Path) -> SeedResult:
    """Train DeepWe with ``seed`` on the dataset's split and score every method on its patients.

    Raises:
        ValueError: none of the patients could be explained.
    """
    config = settings.train_config(dataset.key, seed, work / ".text-cache")
    result = train_deepwe(dataset.cohort, work / "models" / dataset.key / f"seed-{seed}", config)
    bundle, cohort = load_bundle(result.bundle), dataset.cohort
    started = time.perf_counter()
    found = []
    for patient in dataset.explained:
        try:
            curves = patient_curves(
                bundle,
                cohort,
                patient,
                steps=settings.ig_steps,
                curve_steps=settings.curve_steps,
                random_orders=settings.random_orders,
            )
        except ValueError as error:  # a row DeepWe cannot score: left out, and said
            log.warning("%s seed %d: %s", dataset.key, seed, error)
            continue
        found.append(curve_aucs(curves))
    if not found:
        raise ValueError(
            f"{dataset.key}: none of the {len(dataset.explained)} test patients could be explained"
        )
    explain_seconds = time.perf_counter() - started
    aucs = mean_aucs(found)
    log.info(
        "  %s seed %d: deletion AUC IG %.3f, gradient x input %.3f, random %.3f (%d patients, %.0f s)",
        dataset.key,
        seed,
        aucs[IG][DELETION],
        aucs[GXI][DELETION],
        aucs[RANDOM][DELETION],
        len(found),
        explain_seconds,
    )
    return SeedResult(
        seed, aucs, len(found), float(result.metrics["test"]["auroc"]), result.seconds, explain_seconds
    )


def faithfulness_rows(benchmark: str, seeds: Sequence[SeedResult]) -> list[dict[str, Any]]:
    """Rows per method and metric, mean ± sd over seeds.

    ``deletion AUC`` and ``insertion AUC`` of IG, gradient x input and random orders (the random
    orders' mean is the anchor of the other two), then the paired ``... minus random`` of IG and
    gradient x input (the seed's patient mean minus the random orders' on the same patients; anchor 0).
    The paired figure's sd leaves out what moves every ranking's AUC together from seed to seed: the
    level of the model's scores.
    """
    rows = []
    for metric in (DELETION, INSERTION):
        random_mean = float(np.mean([s.aucs[RANDOM][metric] for s in seeds]))
        for method in (IG, GXI, RANDOM):
            values = [s.aucs[method][metric] for s in seeds]
            anchor = None if method == RANDOM else random_mean
            rows.append(result_row(benchmark, method, metric, values, anchor=anchor))
    for metric in (DELETION, INSERTION):
        for method in (IG, GXI):
            values = [s.aucs[method][metric] - s.aucs[RANDOM][metric] for s in seeds]
            rows.append(result_row(benchmark, method, metric + VERSUS_RANDOM, values, anchor=0.0))
    return rows


def _note(dataset: Dataset, settings: Settings, seeds: Sequence[SeedResult]) -> str:
    aurocs = ", ".join(f"{s.test_auroc:.3f}" for s in seeds)
    return (
        f"{TITLES[dataset.key]}: {dataset.size} patients (train/val/test {dataset.split_sizes['train']}/"
        f"{dataset.split_sizes['val']}/{dataset.split_sizes['test']}), one split, DeepWe seeds "
        f"{', '.join(str(s.seed) for s in seeds)} (at most {settings.epochs} epochs; test AUROC {aurocs}); "
        f"{min(s.patients for s in seeds)} test patients explained per seed, the same for every seed; "
        f"IG {settings.ig_steps} steps. AUC of the calibrated log-odds over the fraction of tokens "
        f"removed (deletion: lower is more faithful) or kept (insertion: higher is more faithful), "
        f"{settings.curve_steps} steps, all tokens of the patient's present modalities; random order = "
        f"mean of {settings.random_orders} random orders per patient, and the anchor of the other rows; "
        f"'minus random' rows: the paired difference on the same patients (below 0 is more faithful for "
        f"deletion, above 0 for insertion)."
    )


def run(
    quick: bool, work: Path, settings: Settings | None = None, data: Path = SHARED_DATA
) -> list[dict[str, Any]]:
    """Every dataset of ``settings`` (default :meth:`Settings.quick` or full); the result rows.

    Args:
        data: the shared data folder (PhysioNet 2012 is read from ``data / "physionet2012"``).
    """
    settings = settings or (Settings.quick() if quick else Settings())
    rows: list[dict[str, Any]] = []
    with torch_threads(settings.torch_threads):
        for key in settings.datasets:
            dataset = (
                synthetic_dataset(settings, work) if key == SYNTHETIC else p12_dataset(settings, work, data)
            )
            if dataset is None:
                notes.info(
                    "%s skipped: the PhysioNet 2012 folder %s is absent.",
                    TITLES[key],
                    data / "physionet2012",
                )
                continue
            log.info(
                "%s: %d patients, explaining %d per seed", TITLES[key], dataset.size, len(dataset.explained)
            )
            seeds = [run_seed(dataset, settings, seed, work) for seed in range(settings.seeds)]
            rows += faithfulness_rows(TITLES[key], seeds)
            notes.info(_note(dataset, settings, seeds))
    return rows


# --- the command ---------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per benchmark and ranking: deletion and insertion AUC (and minus random), mean ± sd."""
    index = {(r["benchmark"], r["method"], r["metric"]): r for r in rows}

    def cell(key: tuple[str, str, str]) -> str:
        row = index.get(key)
        if row is None:
            return "-"
        return f"{row['mean']:.3f}" + ("" if row["sd"] is None else f" ± {row['sd']:.3f}")

    lines = [
        "| benchmark | ranking | deletion AUC (lower is better) | minus random | "
        "insertion AUC (higher is better) | minus random |",
        "|---|---|---|---|---|---|",
    ]
    for benchmark, method in dict.fromkeys((r["benchmark"], r["method"]) for r in rows):
        cells = [cell((benchmark, method, m)) for m in (DELETION, DELETION + VERSUS_RANDOM)]
        cells += [cell((benchmark, method, m)) for m in (INSERTION, INSERTION + VERSUS_RANDOM)]
        lines.append(f"| {benchmark} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = part_parser(
        "faithfulness",
        "Deletion/insertion AUC of Integrated Gradients, gradient x input and random orders on DeepWe "
        "(synthetic cohort and PhysioNet 2012).",
        quick="small cohorts, one epoch, three patients per seed",
    )
    add_datasets_option(parser, DATASETS)
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3)")
    parser.add_argument("--patients", type=int, default=None, help="test patients explained per seed")
    args = parser.parse_args(argv)
    overrides = {"datasets": args.datasets, "seeds": args.seeds, "patients": args.patients}

    def report(settings: Settings, rows: list[dict[str, Any]]) -> str:
        return f"\n## Explanation faithfulness ({settings.seeds} seed(s))\n\n{markdown_table(rows)}"

    return run_part(
        "faithfulness",
        args,
        argv,
        Settings,
        overrides,
        run,
        report,
        load_average_at_start=[round(x, 2) for x in os.getloadavg()],
    )


if __name__ == "__main__":
    sys.exit(main())
