"""Summary features for the baselines: each summariser on arrays with a known answer, then whole
cohorts: three real PhysioNet 2012 stays and a tiny synthetic cohort."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.summary_features import (
    SERIES_STATS,
    cohort_features,
    series_summary,
)
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.sources.importers import import_dataset
from pipelines.sources.synth import generate_cohort

P12_RECORDS = ("132539", "132540", "132541")


def test_series_summary_takes_observed_cells_in_time_order_and_counts_them():
    values = np.array([[5.0, 0.0], [0.0, 0.0], [2.0, 0.0], [7.0, 0.0]], dtype=np.float32)
    observed = np.array([[True, False], [False, False], [True, False], [True, False]])
    features = series_summary(values, observed, ["HR", "Lactate"])
    assert len(features) == 2 * len(SERIES_STATS)
    assert [features[f"HR:{s}"] for s in SERIES_STATS] == [5.0, 7.0, 2.0, 7.0, pytest.approx(14 / 3), 3.0]
    assert features["Lactate:count"] == 0.0
    assert all(math.isnan(features[f"Lactate:{s}"]) for s in SERIES_STATS if s != "count")


def _p12_subset(shared: Path, folder: Path) -> Path:
    """A PhysioNet 2012 source folder holding three real stays and their outcome rows."""
    (folder / "set-a").mkdir(parents=True)
    for record in P12_RECORDS:
        shutil.copy(shared / "physionet2012" / "set-a" / f"{record}.txt", folder / "set-a")
    with (shared / "physionet2012" / "Outcomes-a.txt").open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in P12_RECORDS]
    (folder / "Outcomes-a.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return folder


def _measurements(path: Path, parameter: str) -> list[tuple[int, float]]:
    """(minute, value) of one parameter in the first 48 h, averaged per minute (the test's own parse)."""
    per_minute: dict[int, list[float]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            hours, minutes = row["Time"].split(":")
            minute = int(hours) * 60 + int(minutes)
            if row["Parameter"] == parameter and float(row["Value"]) != -1 and minute < 48 * 60:
                per_minute.setdefault(minute, []).append(float(row["Value"]))
    return [(m, float(np.mean(v))) for m, v in sorted(per_minute.items())]


def test_physionet2012_features_of_three_real_stays(shared_data, tmp_path):
    source = _p12_subset(shared_data, tmp_path / "source")
    spec = import_dataset("physionet2012", source, tmp_path / "cohort").spec_path
    features = cohort_features(load_cohort(spec))
    frame = features.frame
    assert list(frame.index) == list(P12_RECORDS)
    assert features.unreadable == {}
    channels = load_cohort(spec).spec.modalities["timeseries"].channels
    assert len(features.blocks["timeseries"]) == len(channels) * len(SERIES_STATS)
    assert frame.loc["132539", "static:Age"] == 54
    assert math.isnan(frame.loc["132539", "static:Height"])  # -1 in the record: unknown
    assert frame.loc["132539", "static:Gender=0"] == 1 and frame.loc["132539", "static:Gender=1"] == 0
    for record in P12_RECORDS:
        for parameter in ("HR", "GCS", "Urine"):
            expected = _measurements(source / "set-a" / f"{record}.txt", parameter)
            row = frame.loc[record]
            assert row[f"timeseries:{parameter}:count"] == len(expected)
            if not expected:
                assert math.isnan(row[f"timeseries:{parameter}:mean"])
                continue
            values = [v for _, v in expected]
            assert row[f"timeseries:{parameter}:first"] == pytest.approx(values[0], rel=1e-5)
            assert row[f"timeseries:{parameter}:last"] == pytest.approx(values[-1], rel=1e-5)
            assert row[f"timeseries:{parameter}:min"] == pytest.approx(min(values), rel=1e-5)
            assert row[f"timeseries:{parameter}:max"] == pytest.approx(max(values), rel=1e-5)
            assert row[f"timeseries:{parameter}:mean"] == pytest.approx(np.mean(values), rel=1e-5)


@pytest.fixture
def tiny_synthetic(tmp_path) -> Path:
    return generate_cohort(tmp_path / "synth", n=12, seed=0, missing_rate=0.3).spec_path


def test_synthetic_features_have_a_block_per_modality_nan_exactly_where_it_is_missing(tiny_synthetic):
    cohort = load_cohort(tiny_synthetic)
    features = cohort_features(cohort)
    assert list(features.blocks) == ["labs", "notes", "cxr", "pcg", "vitals", "ecg"]
    assert features.frame.shape == (12, sum(len(c) for c in features.blocks.values()))
    assert features.unreadable == {}
    for record in cohort.records():
        row = features.frame.loc[record.patient_id]
        for name, path in record.paths.items():
            block = row[features.blocks[name]]
            if path is None:
                assert block.isna().all(), (record.patient_id, name)
            else:
                assert block.notna().any(), (record.patient_id, name)
        sexes = row["labs:sex=F"] + row["labs:sex=M"]
        assert sexes == 1
        if record.paths["ecg"] is not None:  # the generator's heart rates lie in 45-170 bpm
            assert 60 / 170 - 0.05 < row["ecg:II:rr_mean_s"] < 60 / 45 + 0.05
    with pytest.raises(ValueError, match="no features for modalities"):
        features.columns(["labs", "xray"])
    assert features.columns(["pcg"]) == features.blocks["pcg"]


def test_an_unreadable_file_leaves_its_block_nan_and_is_counted(tiny_synthetic):
    cohort = load_cohort(tiny_synthetic)
    record = next(r for r in cohort.records() if r.paths["cxr"] is not None)
    Path(record.paths["cxr"]).write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 40)  # header, no pixels
    features = cohort_features(cohort, ["cxr", "labs"])
    assert features.unreadable == {"cxr": 1}
    assert list(features.blocks) == ["cxr", "labs"]
    assert features.frame.loc[record.patient_id, features.blocks["cxr"]].isna().all()
    assert features.frame.loc[record.patient_id, "labs:age"] > 0
    with pytest.raises(ValueError, match="no modalities"):
        cohort_features(cohort, ["cxr", "xray"])
