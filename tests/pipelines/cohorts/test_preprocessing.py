"""What training fits on the training split only: bin edges, dropped variables; ensemble bundles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.prepare import prepare_cohort
from pipelines.training.train import train
from tests.pipelines.conftest import TINY


def _edit_table(folder: Path, edit) -> Path:
    table = pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(folder / "cohort.csv", index=False)
    return folder / "cohort.yaml"


def test_bin_edges_are_fitted_on_the_training_split_only(editable_cohort):
    before = prepare_cohort(load_cohort(editable_cohort / "cohort.yaml")).preprocessing

    def extreme_outside_training(table: pd.DataFrame) -> None:
        table.loc[table["split"] != "train", "lactate"] = "1e30"

    after = prepare_cohort(load_cohort(_edit_table(editable_cohort, extreme_outside_training))).preprocessing
    assert before["numeric_edges"]["labs"] == after["numeric_edges"]["labs"]
    assert before["tabular"]["labs"] == after["tabular"]["labs"]


def test_a_variable_never_observed_in_training_is_dropped_and_named(editable_cohort):
    def blank_in_training(table: pd.DataFrame) -> None:
        table.loc[table["split"] == "train", "sodium"] = ""

    prepared = prepare_cohort(load_cohort(_edit_table(editable_cohort, blank_in_training)))
    names = [item["name"] for item in prepared.preprocessing["tabular"]["labs"]["numeric"]]
    assert "sodium" not in names and "lactate" in names
    assert prepared.preprocessing["never_observed"]["labs"] == ["sodium"]
    assert "sodium" not in prepared.tabular["labs"].names


def test_measurement_series_become_statistic_tokens_with_train_fitted_edges(cohort_60):
    prepared = prepare_cohort(load_cohort(cohort_60))
    vitals = prepared.preprocessing["sensor"]["vitals"]
    assert vitals["tokens"] == "variables" and prepared.preprocessing["sensor"]["ecg"]["tokens"] == "windows"
    edges = np.asarray(prepared.preprocessing["numeric_edges"]["vitals"])
    channels = len(prepared.cohort.spec.modalities["vitals"].channels)
    assert edges.shape == (channels * 8, 9) and (np.diff(edges, axis=1) >= 0).all()


def test_trajectory_tokens_train_from_kept_measurements_and_survive_the_bundle(cohort_60, tmp_path):
    config = replace(TINY, epochs=1, encoders=TINY.encoders | {"sensor": {"trajectory": True}})
    train(cohort_60, tmp_path / "model", config, device="cpu", progress=False)
    bundle = load_bundle(tmp_path / "model")
    assert bundle.contents.preprocessing["sensor"]["vitals"]["trajectory"] is True
    vitals = bundle.model.encoders["vitals"]
    assert vitals.config.trajectory and "HR (trajectory)" in vitals.token_names
    dataset = prepare_cohort(load_cohort(cohort_60), sensor_trajectory=True).dataset("test")
    sample = next(s for s in (dataset[i] for i in range(len(dataset))) if s.inputs["vitals"] is not None)
    kept = sample.inputs["vitals"].observations
    assert kept is not None and len(kept.value) == int(sample.inputs["vitals"].values[:, 5].sum())
    tokens = vitals(vitals.collate([sample.inputs["vitals"]]))
    first = vitals.token_names.index("HR (trajectory)")
    assert tokens.mask[0, first : first + len(vitals.config.channel_names)].any()


@pytest.mark.slow
def test_an_ensemble_bundle_round_trips_and_averages_its_members(cohort_60, tmp_path):
    out = tmp_path / "ensemble"
    result = train(cohort_60, out, replace(TINY, ensemble=2, epochs=2), device="cpu", progress=False)
    assert [m["seed"] for m in result.metrics["members"]] == [TINY.seed, TINY.seed + 1]
    first, again = load_bundle(out), load_bundle(out)
    assert first.contents.config["ensemble"] == 2
    assert any(".members.1." in key for key in first.contents.weights)
    prepared = prepare_cohort(load_cohort(cohort_60))
    batch = next(
        iter(
            torch.utils.data.DataLoader(
                prepared.dataset("test"), batch_size=8, collate_fn=lambda s: _collate(first, s)
            )
        )
    )
    with torch.no_grad():
        output = first.model(batch)
        torch.testing.assert_close(output.logits, again.model(batch).logits, rtol=0, atol=0)
        members = first.model.core.members
        values, masks, present = first.model.tokens(batch)
        halves = [{m: v.split(v.shape[-1] // 2, dim=-1)[i] for m, v in values.items()} for i in range(2)]
        expected = torch.stack([members[i](halves[i], masks, present).logits for i in range(2)]).mean(0)
    torch.testing.assert_close(output.logits, expected)


def _collate(bundle, samples):
    from pipelines.cohorts.dataset import PatientCollator

    return PatientCollator(bundle.model.encoders)(samples)


@pytest.mark.slow
def test_predict_ignores_and_counts_a_variable_training_never_observed(editable_cohort, tmp_path):
    from pipelines.inference.predict import predict_cohort

    def blank_in_training(table: pd.DataFrame) -> None:
        table.loc[table["split"] == "train", "sodium"] = ""

    spec = _edit_table(editable_cohort, blank_in_training)
    train(spec, tmp_path / "model", replace(TINY, epochs=1), device="cpu", progress=False)
    bundle = load_bundle(tmp_path / "model")
    assert "sodium" not in bundle.contents.config["encoders"]["labs"]["config"]["numeric"]
    summary = predict_cohort(bundle, spec, tmp_path / "p.parquet", progress=False)
    filled = (
        pd.read_csv(editable_cohort / "cohort.csv", dtype=str, keep_default_na=False)["sodium"].ne("").sum()
    )
    assert filled > 0 and summary.ignored == {"labs.sodium": filled}
    assert summary.rows == summary.ok == 31
