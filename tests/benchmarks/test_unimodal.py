"""The unimodal benchmark's logic: folds, split cohorts, and one tiny end-to-end run on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.unimodal import (
    BENCHMARKS,
    Anchor,
    Benchmark,
    RunSettings,
    holdout_split,
    kfold_splits,
    main,
    markdown_table,
    run_benchmark,
    select,
    shuffled_by_outcome,
    split_cohort,
    subset,
    write_results,
)
from benchmarks.unimodal import run as unimodal_part
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.validate import validate_loaded
from pipelines.sources.importers import import_dataset

LABELS = ["1"] * 13 + ["0"] * 44  # odd sizes, imbalanced like the real outcomes


def test_shuffled_by_outcome_is_seeded_and_covers_every_row_once():
    groups = shuffled_by_outcome(LABELS, seed=3)
    assert [len(g) for g in groups] == [44, 13]  # outcomes sorted: "0" then "1"
    assert sorted(np.concatenate(groups)) == list(range(len(LABELS)))
    again = shuffled_by_outcome(LABELS, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(groups, again, strict=True))
    assert not np.array_equal(groups[0], shuffled_by_outcome(LABELS, seed=4)[0])


def test_kfold_splits_put_every_patient_in_one_test_fold_with_val_the_next_fold():
    splits = kfold_splits(LABELS, folds=5, seed=0)
    tests = np.stack([s == "test" for s in splits])
    vals = np.stack([s == "val" for s in splits])
    assert (tests.sum(0) == 1).all() and (vals.sum(0) == 1).all()
    for k in range(5):
        assert np.array_equal(vals[k], tests[(k + 1) % 5])
        positives = (np.asarray(LABELS)[tests[k]] == "1").sum()
        assert positives in (2, 3)  # 13 positives over 5 folds
        assert tests[k].sum() in (11, 12)  # 57 patients over 5 folds
    assert set(splits[0]) == {"train", "val", "test"}


def test_holdout_split_is_seeded_and_stratified_70_15_15():
    labels = ["1"] * 100 + ["0"] * 300
    split = holdout_split(labels, seed=0)
    assert np.array_equal(split, holdout_split(labels, seed=0))
    assert [(split == s).sum() for s in ("train", "val", "test")] == [280, 60, 60]
    positives = np.asarray(labels) == "1"
    assert positives[split == "test"].sum() == 15


def test_subset_keeps_the_proportions_of_outcome_and_official_split():
    table = pd.DataFrame(
        {
            "label": ["1", "0"] * 150,
            "split": ["train"] * 200 + ["val"] * 40 + ["test"] * 60,
        }
    )
    small = subset(table, "label", 100, seed=0, by="split")
    counts = small.groupby(["split", "label"]).size().to_dict()
    assert counts == {(s, c): n for s, n in (("test", 10), ("train", 33), ("val", 7)) for c in "01"}
    assert small.index.is_monotonic_increasing
    assert subset(table, "label", 1000, seed=0) is table


def test_split_cohort_validates_in_memory_and_keeps_files_at_their_source(tmp_path, shared_data):
    imported = import_dataset(
        "medmnist", shared_data / "medmnist" / "breastmnist.npz", tmp_path / "import", limit_per_split=20
    )
    table = pd.read_csv(imported.spec_path.parent / "cohort.csv", dtype=str, keep_default_na=False)
    split = ["test"] * 5 + ["val"] * 5 + ["train"] * (len(table) - 10)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cohort = split_cohort(imported.spec_path, table, split)
    assert cohort.in_memory and validate_loaded(cohort).ok
    assert cohort.data_root == load_cohort(imported.spec_path).data_root
    assert [r.split for r in cohort.records()][:6] == ["test"] * 5 + ["val"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.realdata
def test_tiny_kfold_run_on_real_images_writes_folds_a_table_and_json_rows(tmp_path, shared_data):
    # BreastMNIST through the k-fold path: the smallest real set, and a tiny backbone.
    tiny = Benchmark(
        key="breastmnist",
        title="BreastMNIST",
        importer="medmnist",
        source="medmnist/breastmnist.npz",
        method="image: test_resnet at 28 px",
        split="kfold",
        encoders={"image": {"backbone": "test_resnet", "image_size": 28}},
        anchor=Anchor(0.5, "chance"),
    )
    settings = RunSettings(folds=3, epochs=1, patience=1, batch_size=16, limit=45)
    torch.set_num_threads(1)  # the cores are shared; conftest restores the count
    result = run_benchmark(tiny, settings, work=tmp_path / "work", data=shared_data)
    assert len(result.folds) == 3
    assert sum(f.n_test for f in result.folds) == 45  # every patient tested once
    assert all(f.n_train + f.n_val + f.n_test == 45 for f in result.folds)
    assert all(0.0 <= f.auroc <= 1.0 for f in result.folds)
    assert result.sd is not None
    assert not (tmp_path / "work" / "cohorts").exists()  # fold cohorts live in memory
    assert (tmp_path / "work" / "models" / "breastmnist" / "fold-2" / "metrics.json").is_file()
    table = markdown_table([result])
    assert "| BreastMNIST |" in table and "3-fold" in table and "0.500 (chance)" in table
    write_results([result], tmp_path / "rows.json")
    written = json.loads((tmp_path / "rows.json").read_text())
    assert written["run"]["datasets"] == ["breastmnist"]
    (row,) = written["rows"]
    assert {"benchmark", "method", "metric", "mean", "sd", "n", "anchor"} <= row.keys()
    assert row["n"] == 45 and row["metric"] == "test AUROC"
    assert row["mean"] == pytest.approx(result.mean, abs=1e-4)
    assert row["details"]["settings"]["fusion"]["use_graph"] is False


def test_main_refuses_an_unknown_dataset_with_exit_2(tmp_path, capsys):
    code = main(["--datasets", "pneumonia", "--out", str(tmp_path / "x.json"), "--work", str(tmp_path)])
    assert code == 2
    assert "pneumoniamnist" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_every_benchmark_names_an_importer_source_and_a_known_split():
    assert set(BENCHMARKS) == {"pneumoniamnist", "cinc2017", "physionet2012", "iu-xray"}
    assert {b.split for b in BENCHMARKS.values()} <= {"official", "kfold", "holdout"}
    assert Path(BENCHMARKS["pneumoniamnist"].source).suffix == ".npz"
    with pytest.raises(ValueError, match="at least 3"):
        RunSettings(folds=2)


def test_select_refuses_a_dataset_whose_data_is_absent_before_running_anything(tmp_path):
    with pytest.raises(ValueError, match="iu_xray_reports"):
        select(["physionet2012", "iu-xray"], data=tmp_path)
    (tmp_path / "iu_xray_reports").mkdir()
    assert [b.key for b in select(["iu-xray"], data=tmp_path)] == ["iu-xray"]


def test_the_suite_part_names_absent_data_in_a_note_and_runs_nothing(tmp_path, caplog):
    with caplog.at_level("INFO", logger="benchmarks.notes"):
        assert unimodal_part(quick=True, work=tmp_path, data=tmp_path / "nothing") == []
    assert "PneumoniaMNIST" in caplog.text and "no data" in caplog.text
    assert not any(tmp_path.iterdir())
