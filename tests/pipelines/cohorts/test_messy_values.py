"""One bad value or path is that row's problem: extreme numbers, escaping paths, silent recordings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.validate import validate_cohort
from pipelines.inference.batching import PredictOptions, iter_predictions, predict_batch, prediction_loader
from pipelines.inference.output_table import read_predictions, row_to_record
from pipelines.inference.predict import predict_cohort


def _table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "cohort.csv", dtype=str, keep_default_na=False)


def _edit_table(folder: Path, edits: dict[tuple[int, str], str]) -> None:
    table = _table(folder)
    for (row, column), value in edits.items():
        table.loc[row - 1, column] = value
    table.to_csv(folder / "cohort.csv", index=False)


def _records(out: Path) -> list:
    return [row_to_record(row) for row in read_predictions(out).to_dict("records")]


def _first_rows_with(folder: Path, column: str, n: int) -> list[int]:
    return [i + 1 for i, cell in enumerate(_table(folder)[column]) if cell][:n]


def test_an_extreme_lab_value_is_missing_and_out_of_range_on_its_row_only(bundle, cohort_copy, tmp_path):
    _edit_table(cohort_copy, {(3, "lactate"): "1e300", (4, "creatinine"): "-1e30", (5, "sodium"): "inf"})
    out = tmp_path / "p.parquet"
    summary = predict_cohort(
        bundle, cohort_copy / "cohort.yaml", out, PredictOptions(batch_size=64), progress=False
    )
    records = _records(out)
    assert len(records) == 60 and summary.ok == 60
    for row, column in ((3, "lactate"), (4, "creatinine"), (5, "sodium")):
        record = records[row - 1]
        assert record.status == "ok" and f"labs.{column}" in record.out_of_range
        assert f"column {column!r} is more than 10000 training SDs" in record.modality_errors["labs"]
    assert "labs" not in records[5].modality_errors


def test_an_extreme_sensor_value_becomes_unobserved_and_is_counted(bundle, cohort_copy, tmp_path):
    [row] = _first_rows_with(cohort_copy, "vitals_path", 1)
    vitals = cohort_copy / _table(cohort_copy).loc[row - 1, "vitals_path"]
    with vitals.open("a") as handle:
        handle.write("23.9,1e30,97,80,15\n23.95,1e300,97,80,15\n")
    out = tmp_path / "p.parquet"
    predict_cohort(bundle, cohort_copy / "cohort.yaml", out, progress=False)
    record = _records(out)[row - 1]
    assert record.status == "ok" and record.modality_present["vitals"]
    assert record.skipped_lines == {
        "vitals": {
            "value more than 10000 training SDs from the mean (read as unobserved)": 1,
            "cell that is not a number (read as unobserved)": 1,
        }
    }


def test_validate_flags_a_number_beyond_float32(editable_cohort):
    _edit_table(editable_cohort, {(2, "lactate"): "1e300"})
    [problem] = validate_cohort(editable_cohort / "cohort.yaml").problems
    assert problem.row == 2 and problem.column == "lactate" and "3.4e+38 in magnitude" in problem.expected


def test_a_row_the_model_refuses_is_an_error_row_and_its_batch_goes_on(bundle, cohort_60):
    cohort = load_cohort(cohort_60)
    loader, collate = prediction_loader(bundle, cohort, list(range(8)), batch_size=8)
    samples, hashes, outside = next(iter(loader))
    samples[2].inputs["labs"]["numeric"][0] = np.inf  # past every reader's guard: only the encoder sees it
    records = predict_batch(
        bundle, collate, samples, hashes, outside, PredictOptions(), bundle.embedding_distance
    )
    assert [r.status for r in records] == ["ok", "ok", "error", "ok", "ok", "ok", "ok", "ok"]
    assert "the model could not use this row's inputs (ValueError" in records[2].error
    expected = list(iter_predictions(bundle, cohort, [0, 1, 3], PredictOptions()))
    assert [r.risk for r in expected] == pytest.approx([records[i].risk for i in (0, 1, 3)], abs=1e-6)


def test_an_escaping_path_is_an_error_naming_its_row_and_column(bundle, cohort_copy, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(next((cohort_copy / "cxr").glob("*")), outside)
    (cohort_copy / "cxr" / "link.dcm").symlink_to(outside)
    rows = _first_rows_with(cohort_copy, "cxr_path", 3)
    edits = {(rows[0], "cxr_path"): "../outside.png", (rows[1], "cxr_path"): str(outside)}
    edits[(rows[2], "cxr_path")] = "cxr/link.dcm"
    _edit_table(cohort_copy, edits)
    for mode in ("missing", "error"):
        out = tmp_path / f"{mode}.csv"
        summary = predict_cohort(
            bundle, cohort_copy / "cohort.yaml", out, PredictOptions(on_bad_file=mode), progress=False
        )
        records = _records(out)
        assert len(records) == 60 and summary.errors == 3
        for row in rows:
            assert records[row - 1].status == "error"
            assert records[row - 1].error.startswith(f"row {row}, column 'cxr_path': path refused")
        assert summary.error_reasons == {"row N, column 'cxr_path': path refused": 3}


def test_validate_lists_a_wfdb_header_whose_signal_file_escapes(editable_cohort, tmp_path):
    header = sorted((editable_cohort / "ecg").glob("*.hea"))[0]
    signal = header.with_suffix(".dat")
    shutil.move(signal, tmp_path / signal.name)
    signal.symlink_to(tmp_path / signal.name)
    problems = validate_cohort(editable_cohort / "cohort.yaml").problems
    [problem] = [p for p in problems if p.column == "ecg_path"]
    assert "links outside the header's folder" in problem.expected


@pytest.mark.parametrize("mode", ["missing", "error"])
def test_a_silent_recording_has_a_stated_reason(bundle, cohort_copy, tmp_path, mode):
    [row] = _first_rows_with(cohort_copy, "pcg_path", 1)
    soundfile.write(cohort_copy / "pcg" / "silent.wav", np.zeros(4000 * 3), 4000)
    _edit_table(cohort_copy, {(row, "pcg_path"): "pcg/silent.wav"})
    out = tmp_path / "p.parquet"
    predict_cohort(bundle, cohort_copy / "cohort.yaml", out, PredictOptions(on_bad_file=mode), progress=False)
    record = _records(out)[row - 1]
    if mode == "missing":
        assert record.status == "ok" and not record.modality_present["pcg"]
        assert "every sample of the first" in record.modality_errors["pcg"]
    else:
        assert record.status == "error" and "a silent recording" in record.error
