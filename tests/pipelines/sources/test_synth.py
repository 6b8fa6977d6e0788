from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import soundfile
import wfdb
from sklearn.metrics import roc_auc_score

from pipelines.sources.synth import SIGNAL_WEIGHTS, generate_cohort


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_writes_identical_files_and_another_seed_does_not(synth_cohort, tmp_path):
    again = tmp_path / "again"
    generate_cohort(again, n=31, seed=7, missing_rate=0.3)
    assert _digest(again) == _digest(synth_cohort)
    other = tmp_path / "other"
    generate_cohort(other, n=31, seed=8, missing_rate=0.3)
    assert _digest(other)["cohort.csv"] != _digest(synth_cohort)["cohort.csv"]


def test_every_file_opens_with_its_standard_reader(synth_cohort):
    table = pd.read_csv(synth_cohort / "cohort.csv", dtype=str, keep_default_na=False)
    assert len(table) == 31 and table["patient_id"].is_unique
    opened = {"note": 0, "cxr": 0, "pcg": 0, "vitals": 0, "ecg": 0}
    for _, row in table.iterrows():
        if row["note_path"]:
            assert "Nursing note" in (synth_cohort / row["note_path"]).read_text(encoding="utf-8")
            opened["note"] += 1
        if row["cxr_path"]:
            ds = pydicom.dcmread(synth_cohort / row["cxr_path"])
            assert ds.Modality == "CR" and ds.PatientID == row["patient_id"]
            assert ds.pixel_array.shape == (64, 64) and ds.pixel_array.max() <= 4095
            opened["cxr"] += 1
        if row["pcg_path"]:
            audio, rate = soundfile.read(synth_cohort / row["pcg_path"])
            assert rate == 4000 and audio.shape == (12000,) and np.abs(audio).max() > 0.1
            opened["pcg"] += 1
        if row["vitals_path"]:
            vitals = pd.read_csv(synth_cohort / row["vitals_path"])
            assert list(vitals.columns) == ["time", "HR", "SpO2", "MAP", "RR"]
            assert vitals["time"].is_monotonic_increasing and vitals["HR"].isna().any() | True
            opened["vitals"] += 1
        if row["ecg_path"]:
            record = wfdb.rdrecord(str((synth_cohort / row["ecg_path"]).with_suffix("")))
            assert record.fs == 250 and record.sig_name == ["II"] and record.p_signal.shape == (2500, 1)
            opened["ecg"] += 1
    assert all(count > 5 for count in opened.values()), opened


def test_missing_modalities_never_leave_a_patient_empty(tmp_path):
    generate_cohort(tmp_path, n=60, seed=3, missing_rate=0.9)
    table = pd.read_csv(tmp_path / "cohort.csv", dtype=str, keep_default_na=False)
    assert (table["age"] != "").all() and (table["sex"] != "").all()
    missing = (table[["note_path", "cxr_path", "pcg_path", "vitals_path", "ecg_path"]] == "").mean().mean()
    assert 0.8 < missing < 0.97


def test_ground_truth_describes_the_signal(synth_cohort):
    truth = json.loads((synth_cohort / "ground_truth.json").read_text())
    assert truth["seed"] == 7 and truth["n"] == 31
    assert truth["modality_ranking"] == sorted(SIGNAL_WEIGHTS, key=lambda m: -SIGNAL_WEIGHTS[m])
    assert "lactate" in truth["modalities"]["labs"]["informative"]
    assert "sodium" in truth["modalities"]["labs"]["noise"]
    table = pd.read_csv(synth_cohort / "cohort.csv", dtype=str)
    assert [p["patient_id"] for p in truth["patients"]] == list(table["patient_id"])
    assert [str(p["outcome"]) for p in truth["patients"]] == list(table["died"])


@pytest.mark.slow
def test_modalities_are_each_weak_and_together_strong(tmp_path):
    """Fusion must pay: the true log-odds beat every single latent component by a clear margin."""
    generate_cohort(tmp_path, n=400, seed=11, missing_rate=0.0)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    singles = {m: v["oracle_auroc"] for m, v in truth["modalities"].items()}
    assert all(0.55 < auc < 0.8 for auc in singles.values()), singles
    assert truth["oracle_auroc_all"] > max(singles.values()) + 0.1
    # the signal really is in the files: lactate (a written value) tracks the labs component
    table = pd.read_csv(tmp_path / "cohort.csv")
    labs = np.array([p["latent"]["labs"] for p in truth["patients"]])
    observed = table["lactate"].notna().to_numpy()
    high = labs[observed] > 0
    assert roc_auc_score(high, table["lactate"][observed]) > 0.75


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="missing_rate"):
        generate_cohort(tmp_path, n=20, missing_rate=1.0)
    with pytest.raises(ValueError, match="at least 10"):
        generate_cohort(tmp_path, n=3)
