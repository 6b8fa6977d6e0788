"""Training, the model bundle and its safety: save/load identity, tamper and pickle refusal, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_schemas.bundle import BUNDLE_FILES
from pipelines.bundles.bundle_io import BundleError, read_bundle, write_bundle
from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.dataset import PatientCollator
from pipelines.cohorts.prepare import CohortError, prepare_cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.sources.synth import generate_cohort
from pipelines.training.scoring import collect_logits
from pipelines.training.train import train
from pipelines.training.train_config import TrainConfig
from tests.pipelines.conftest import TINY

DESIGN_FILES = {"manifest.json", *BUNDLE_FILES}


def _eval_outputs(bundle, spec_path: Path, batch_size: int, limit: int | None = None) -> torch.Tensor:
    """(N, C) logits of the first ``limit`` labelled patients, through the pipeline's data path."""
    prepared = prepare_cohort(load_cohort(spec_path))
    from pipelines.cohorts.prepare import tabular_arrays

    records_table = prepared.cohort.table.iloc[[r.row - 1 for r in prepared.records]].reset_index(drop=True)
    prepared.tabular = tabular_arrays(bundle.preprocessing, records_table)
    dataset = prepared.dataset()
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(limit))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=PatientCollator(bundle.model.encoders)
    )
    logits, _ = collect_logits(bundle.model, loader, bundle.device)
    return logits


def test_bundle_holds_exactly_the_design_files(bundle_path):
    assert {p.name for p in bundle_path.iterdir()} == DESIGN_FILES
    contents = read_bundle(bundle_path)
    assert contents.manifest.training_data_fingerprint
    assert contents.manifest.library_versions["torch"] == torch.__version__.split("+")[0]
    assert contents.reference["embeddings"].shape[0] == len(contents.reference_ids)
    assert all(i.startswith("R") for i in contents.reference_ids)
    calibration = json.loads((bundle_path / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and 0 <= calibration["threshold"]["value"] <= 1
    assert "Intended use" in (bundle_path / "model_card.md").read_text()


def test_save_then_load_gives_bit_identical_outputs(bundle_path, cohort_60, tmp_path):
    first = load_bundle(bundle_path)
    contents = first.contents
    copy = write_bundle(
        tmp_path / "copy",
        spec=contents.manifest.cohort_spec,
        data_fingerprint=contents.manifest.training_data_fingerprint,
        config=contents.config,
        weights=first.model.state_dict(),
        preprocessing=contents.preprocessing,
        reference=contents.reference,
        reference_ids=contents.reference_ids,
        calibration=contents.calibration,
        metrics=contents.metrics,
        model_card=contents.model_card,
    )
    again = load_bundle(copy)
    assert torch.equal(_eval_outputs(first, cohort_60, 16), _eval_outputs(again, cohort_60, 16))


def test_prediction_does_not_depend_on_batch_mates(bundle_path, cohort_60):
    bundle = load_bundle(bundle_path)
    alone = _eval_outputs(bundle, cohort_60, 1, limit=15)
    together = _eval_outputs(bundle, cohort_60, 15, limit=15)
    odd = _eval_outputs(bundle, cohort_60, 7, limit=15)
    assert torch.allclose(alone, together, atol=1e-5)
    assert torch.allclose(alone, odd, atol=1e-5)


def test_stored_test_metrics_match_the_loaded_model(bundle_path, cohort_60):
    bundle = load_bundle(bundle_path)
    stored = bundle.contents.metrics["test"]
    logits = _eval_outputs(bundle, cohort_60, 16)
    prepared = prepare_cohort(load_cohort(cohort_60))
    test = prepared.splits == "test"
    from pipelines.evaluation.metrics import brier

    risk = torch.softmax(logits / bundle.temperature, dim=1)[:, 1].numpy()
    assert stored["n"] == test.sum()
    assert brier(prepared.labels[test], risk[test]) == pytest.approx(stored["brier"], abs=1e-6)
    # This small test split holds one outcome only: AUROC and its interval are undefined.
    assert stored["positives"] in (0, stored["n"]) and stored["auroc_ci95"] == [None, None]


def test_the_test_auroc_interval_holds_the_estimate_and_narrows_with_patients() -> None:
    from pipelines.evaluation.metrics import rank_auroc
    from pipelines.training.calibrate import auroc_interval

    generator = torch.Generator().manual_seed(0)
    widths = []
    for n in (60, 2000):
        labels = (torch.rand(n, generator=generator) < 0.3).long()
        logits = torch.stack([torch.zeros(n), labels * 1.5 + torch.randn(n, generator=generator)], 1)
        low, high = auroc_interval(logits, labels, temperature=1.0)
        risk = torch.softmax(logits, 1)[:, 1].numpy()
        assert low < rank_auroc(labels.numpy(), risk) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3
    assert auroc_interval(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), 1.0) == [None, None]


def test_the_summary_shows_an_interval_where_training_computed_one() -> None:
    from pipelines.cli.rendering import split_summary

    scores = {"auroc": 0.6021, "auprc": 0.2551, "brier": 0.2219, "ece": 0.2771, "n": 44}
    assert split_summary(scores) == "auroc 0.602, auprc 0.255, brier 0.222, ece 0.277 (n=44)"
    shown = split_summary(scores | {"auroc_ci95": [0.4123, 0.7877]})
    assert shown.startswith("auroc 0.602 (95% CI 0.41–0.79), auprc 0.255")
    assert split_summary(scores | {"auroc_ci95": [None, None]}).startswith("auroc 0.602, auprc")


def _copy(bundle_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle_path, target)
    return target


def test_a_tampered_weight_file_is_refused(bundle_path, tmp_path):
    target = _copy(bundle_path, tmp_path)
    data = bytearray((target / "weights.safetensors").read_bytes())
    data[-1] ^= 0x01
    (target / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights.safetensors: sha256 does not match"):
        load_bundle(target)


def test_a_tampered_manifest_is_refused(bundle_path, tmp_path):
    target = _copy(bundle_path, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["metrics.json"] = "0" * 64
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"metrics\.json: sha256 does not match"):
        load_bundle(target)
    manifest["format_version"] = 99
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(target)
    manifest["format_version"] = 1
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"format version 1; .* train the model again"):
        load_bundle(target)


class _RunsCode:
    """Unpickling this writes a marker file: the attack a pickled model file carries."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def test_a_planted_pickle_is_refused_and_never_runs(bundle_path, tmp_path):
    target = _copy(bundle_path, tmp_path)
    marker = tmp_path / "marker.txt"
    (target / "weights.pt").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(BundleError, match=r"not listed in the manifest: \['weights.pt'\]"):
        load_bundle(target)
    # the same bytes in place of the weights file: refused by its hash, and never unpickled
    (target / "weights.pt").rename(target / "weights.safetensors")
    with pytest.raises(BundleError, match="sha256 does not match"):
        load_bundle(target)
    assert not marker.exists()


def test_invalid_cohort_stops_before_training(cohort_60, tmp_path):
    bad = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, bad)
    spec = yaml.safe_load((bad / "cohort.yaml").read_text())
    spec["modalities"]["labs"]["numeric"].append("lactat")
    (bad / "cohort.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as caught:
        train(bad / "cohort.yaml", tmp_path / "model", TINY, device="cpu", progress=False)
    assert any("did you mean 'lactate'" in p.expected for p in caught.value.problems)
    assert not (tmp_path / "model").exists()


def test_one_outcome_class_is_a_clear_error(cohort_60, tmp_path):
    one = tmp_path / "cohort"
    shutil.copytree(cohort_60.parent, one)
    table = (one / "cohort.csv").read_text().splitlines()
    header = table[0].split(",")
    died = header.index("died")
    rows = [line.split(",") for line in table[1:]]
    for row in rows:
        row[died] = "0"
    (one / "cohort.csv").write_text("\n".join([table[0], *(",".join(r) for r in rows)]) + "\n")
    with pytest.raises(CohortError, match="only outcome '0'"):
        train(one / "cohort.yaml", tmp_path / "model", TINY, device="cpu", progress=False)


@pytest.mark.slow
def test_strong_signal_reaches_validation_auroc_above_0_8(tmp_path):
    """Labs, notes and vitals of a strong-signal cohort (their own oracle AUROC is about 0.89)."""
    generate_cohort(tmp_path / "cohort", n=300, seed=4, missing_rate=0.0, signal_scale=3.0)
    spec = yaml.safe_load((tmp_path / "cohort" / "cohort.yaml").read_text())
    for modality in ("cxr", "pcg", "ecg"):
        del spec["modalities"][modality]
    (tmp_path / "cohort" / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # Four synthetic vitals whose signal is a 24 h trend: on 210 training patients the temporal CNN
    # learns it, the per-channel statistics do not (docs/results.md, "Where DeepWe falls short"); light
    # regularisation, as a cohort this small needs.
    config = TrainConfig(
        epochs=15,
        patience=15,
        batch_size=16,
        lr=0.003,
        weight_decay=1e-4,
        token_dim=32,
        encoders={"sensor": {"tokens": "windows"}},
        fusion={"dropout": 0.1},
    )
    result = train(
        tmp_path / "cohort" / "cohort.yaml", tmp_path / "model", config, device="cpu", progress=False
    )
    assert result.metrics["val"]["auroc"] > 0.8, result.metrics["history"]
    assert len(result.epoch_seconds) == result.epochs_run == len(result.metrics["history"])
    assert 0 < sum(result.epoch_seconds) < result.seconds


def _deepwe(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


@pytest.mark.slow
def test_resume_after_kill_ends_where_an_uninterrupted_run_ends(cohort_60, tmp_path):
    config = tmp_path / "config.yaml"
    settings = TINY.to_dict() | {"epochs": 4, "patience": 10, "text_cache": str(tmp_path / "cache")}
    config.write_text(yaml.safe_dump(settings))
    # Both runs on the same torch threads: the default follows the machine's load, and a sum split
    # over another number of threads rounds differently.
    common = ["--config", str(config), "--device", "cpu", "--threads", "1"]
    env = os.environ | {"PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run(_deepwe("train", str(cohort_60), "--out", str(straight), *common), check=True, env=env)

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(_deepwe("train", str(cohort_60), "--out", str(resumed), *common), env=env)
    state = tmp_path / "resumed.checkpoints" / "last.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["loop"]["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not resumed.exists()
    subprocess.run(
        _deepwe("train", str(cohort_60), "--out", str(resumed), *common, "--resume"), check=True, env=env
    )

    a, b = read_bundle(straight), read_bundle(resumed)
    assert a.weights.keys() == b.weights.keys()
    for key in a.weights:
        assert torch.equal(a.weights[key], b.weights[key]), key
    assert a.metrics["history"] == b.metrics["history"]


@pytest.mark.slow
def test_two_process_torchrun_writes_one_bundle(cohort_60, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY.to_dict() | {"epochs": 2, "text_cache": str(tmp_path / "cache")}))
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pipelines.cli", "train", str(cohort_60), "--out", str(out), "--config", str(config), "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == DESIGN_FILES
    assert np.isfinite(load_bundle(out).temperature)
    assert not list(tmp_path.glob(".model.partial-*"))


def test_a_modality_whose_gates_all_shut_is_named_in_the_summary(cohort_60, bundle_path, tmp_path, capsys):
    from pipelines.cli.rendering import print_training
    from tests.pipelines.conftest import TINY

    assert json.loads((bundle_path / "metrics.json").read_text())["shut_modalities"] == {}
    # A sparsity weight this strong shuts every gate long before any modality can teach anything.
    crushing = dataclasses.replace(
        TINY, epochs=8, patience=8, lr=0.05, fusion={**TINY.fusion, "lambda_sparsity": 1000.0}
    )
    result = train(cohort_60, tmp_path / "shut", crushing, device="cpu", progress=False)
    shut = result.metrics["shut_modalities"]
    assert shut and all(0 <= weight < 0.01 for weight in shut.values())
    assert not set(shut) & set(result.metrics["open_modalities"])
    card = (tmp_path / "shut" / "model_card.md").read_text()
    assert all(f"`{name}`: every feature gate shut in training" in card for name in shut)
    print_training(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert all(f"every feature gate of {name!r} is shut" in printed for name in shut)
    assert "sparsity_ramp: 5" in printed and "lambda_encoder: 0.3 with gate_leak: 0.1" in printed


def test_weights_of_about_1_everywhere_are_said_not_to_rank(cohort_60, tmp_path, capsys):
    from pipelines.cli.rendering import print_training

    # Without feature gates every observed token weighs exactly 1: the weights rank nothing.
    ungated = dataclasses.replace(TINY, fusion={**TINY.fusion, "use_feature_gates": False})
    result = train(cohort_60, tmp_path / "open", ungated, device="cpu", progress=False)
    opened = result.metrics["open_modalities"]
    assert set(opened) == set(load_cohort(cohort_60).spec.modalities)
    assert all(weight == pytest.approx(1.0) for weight in opened.values())
    card = " ".join((tmp_path / "open" / "model_card.md").read_text().split())
    assert "are about 1 for every patient" in card and all(f"`{name}`" in card for name in opened)
    print_training(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert "do not rank the features" in printed and "selection_epochs: 5" in printed


def test_a_unimodal_warm_up_is_never_chosen_and_spends_no_patience(cohort_60, tmp_path):
    config = dataclasses.replace(TINY, epochs=5, patience=1, unimodal_warmup=3)
    result = train(cohort_60, tmp_path / "warm", config, device="cpu", progress=False)
    assert result.metrics["best_epoch"] >= 4  # 1-based: the first epoch after the warm-up or later
    assert result.epochs_run >= 4
    with pytest.raises(ValueError, match="additive fusion"):
        train(
            cohort_60,
            tmp_path / "refused",
            dataclasses.replace(config, fusion={**TINY.fusion, "additive_fusion": False}),
            device="cpu",
            progress=False,
        )


def test_a_warm_up_as_long_as_training_is_refused():
    with pytest.raises(ValueError, match="unimodal_warmup"):
        TrainConfig(epochs=3, unimodal_warmup=3)
