"""The faithfulness part: curve AUC bookkeeping on known models, its rows, and a tiny end-to-end run."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from benchmarks.faithfulness import (
    DATASETS,
    DELETION,
    GXI,
    IG,
    INSERTION,
    P12,
    RANDOM,
    SYNTHETIC,
    TITLES,
    VERSUS_RANDOM,
    SeedResult,
    Settings,
    curve_aucs,
    explained_patients,
    faithfulness_rows,
    mean_aucs,
    p12_dataset,
    run,
)
from benchmarks.suite import validate_row
from explain.attribution import METHODS, attribute
from explain.faithfulness_measures import deletion_insertion


def _linear_curves(weights: torch.Tensor, x: torch.Tensor) -> dict:
    """Each method's curves for a linear score ``v @ weights`` whose removed units go to baseline 0."""

    def scorer(keep: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, x, torch.zeros_like(x)) @ weights

    curves = {}
    for method in METHODS:
        attribution = attribute(
            lambda v: v @ weights, x[None], torch.zeros(1, len(x)), method=method, steps=8
        )
        curves[method] = deletion_insertion(scorer, attribution.values, steps=9, random_orders=20)
    return curves


def test_on_a_linear_score_both_attributions_beat_random_orders():
    weights = torch.tensor([3.0, -1.0, 0.2, 2.0, 0.0, -0.5, 1.0, 0.1, -2.0])
    x = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, 1.0, -1.5, 2.0, 0.3])
    curves = _linear_curves(weights, x)
    aucs = curve_aucs(curves)
    assert list(aucs) == [IG, GXI, RANDOM]
    # IG and gradient x input are both w * x here: the same ranking, the same areas.
    assert aucs[IG] == pytest.approx(aucs[GXI])
    assert aucs[IG][DELETION] < aucs[RANDOM][DELETION] - 0.5
    assert aucs[IG][INSERTION] > aucs[RANDOM][INSERTION] + 0.5
    first = next(iter(curves.values()))
    assert aucs[RANDOM] == {
        DELETION: first.aucs["random_deletion"],
        INSERTION: first.aucs["random_insertion"],
    }
    # Deletion starts at the full score and ends at the all-baseline score (0).
    assert first.deletion[0] == pytest.approx(float(x @ weights)) and first.deletion[-1] == pytest.approx(0.0)


def test_a_reversed_ranking_is_worse_than_random():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])

    def scorer(keep: torch.Tensor) -> torch.Tensor:
        return keep.float() @ weights

    aucs = curve_aucs({"integrated_gradients": deletion_insertion(scorer, -weights, random_orders=20)})
    assert aucs[IG][DELETION] > aucs[RANDOM][DELETION]
    assert aucs[IG][INSERTION] < aucs[RANDOM][INSERTION]


def _seed(seed: int, ig: float, gxi: float, random: float) -> SeedResult:
    aucs = {
        IG: {DELETION: ig, INSERTION: -ig},
        GXI: {DELETION: gxi, INSERTION: -gxi},
        RANDOM: {DELETION: random, INSERTION: -random},
    }
    return SeedResult(seed, aucs, patients=4, test_auroc=0.7, train_seconds=1.0, explain_seconds=1.0)


def test_rows_are_means_over_seeds_with_random_as_the_anchor():
    seeds = [_seed(0, 1.0, 2.0, 3.0), _seed(1, 2.0, 2.5, 5.0), _seed(2, 3.0, 3.0, 4.0)]
    rows = [validate_row(r) for r in faithfulness_rows("faithfulness, test", seeds)]
    index = {(r["method"], r["metric"]): r for r in rows}
    assert len(rows) == 10 and all(r["n"] == 3 for r in rows)
    assert index[(IG, DELETION)]["mean"] == pytest.approx(2.0)
    assert index[(IG, DELETION)]["sd"] == pytest.approx(1.0)
    assert index[(IG, DELETION)]["anchor"] == pytest.approx(4.0)
    assert index[(GXI, INSERTION)]["anchor"] == pytest.approx(-4.0)
    assert index[(RANDOM, DELETION)]["anchor"] is None
    # Paired: per seed IG - random = -2, -3, -1.
    paired = index[(IG, DELETION + VERSUS_RANDOM)]
    assert paired["mean"] == pytest.approx(-2.0) and paired["sd"] == pytest.approx(1.0)
    assert paired["anchor"] == 0.0
    assert (RANDOM, DELETION + VERSUS_RANDOM) not in index


def test_mean_over_patients_and_the_explained_patients():
    patients = [curve_aucs(_linear_curves(torch.tensor([1.0, -2.0, 0.5]), x)) for x in torch.eye(3)]
    mean = mean_aucs(patients)
    assert mean[IG][DELETION] == pytest.approx(sum(p[IG][DELETION] for p in patients) / 3)
    ids = [f"P{i}" for i in range(10)]
    chosen = explained_patients(ids, 4)
    assert len(set(chosen)) == 4 and set(chosen) <= set(ids)
    assert chosen == explained_patients(ids, 4) and chosen != explained_patients(ids, 4, seed=1)
    assert sorted(explained_patients(ids[:3], 5)) == ids[:3]


def test_physionet_is_skipped_with_a_note_when_its_folder_is_absent(tmp_path: Path, caplog):
    settings = Settings(datasets=(P12,))
    assert p12_dataset(settings, tmp_path, data=tmp_path) is None
    with caplog.at_level(logging.INFO, logger="benchmarks.notes"):
        assert run(False, tmp_path / "work", settings, data=tmp_path / "nowhere") == []
    assert any(f"{TITLES[P12]} skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_tiny_run_gives_rows_that_validate(tmp_path: Path, caplog):
    settings = Settings(
        datasets=DATASETS,
        seeds=3,
        synth_n=40,
        p12_limit=60,
        epochs=1,
        patience=1,
        patients=2,
        ig_steps=2,
        curve_steps=3,
        random_orders=2,
        quick_model=True,
    )
    with caplog.at_level(logging.INFO, logger="benchmarks.notes"):
        rows = [validate_row(r) for r in run(True, tmp_path, settings)]
    benchmarks = {r["benchmark"] for r in rows}
    assert TITLES[SYNTHETIC] in benchmarks
    assert len(rows) == 10 * len(benchmarks)
    for benchmark in benchmarks:
        index = {(r["method"], r["metric"]): r for r in rows if r["benchmark"] == benchmark}
        assert all(r["n"] == 3 and r["sd"] is not None for r in index.values())
        assert index[(IG, DELETION)]["anchor"] == pytest.approx(index[(RANDOM, DELETION)]["mean"])
        paired = index[(GXI, INSERTION + VERSUS_RANDOM)]["mean"]
        assert paired == pytest.approx(index[(GXI, INSERTION)]["mean"] - index[(RANDOM, INSERTION)]["mean"])
    assert all(math.isfinite(r["mean"]) for r in rows)
    assert any("2 test patients explained per seed" in r.getMessage() for r in caplog.records)
