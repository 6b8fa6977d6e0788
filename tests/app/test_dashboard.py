"""Every dashboard page in-process (Streamlit's AppTest) with a real tiny bundle: the numbers shown are
the ones pipelines computes, and bad input shows a message, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.settings import DashboardSettings, SettingsError, parse_settings
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.evaluation.evaluation import evaluate_predictions
from pipelines.explanations.explaining import patient_position
from pipelines.inference.batching import PredictOptions, iter_predictions
from pipelines.inference.output_table import read_predictions

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"
FIRST_RUN_TIMEOUT = 180  # the first run of a session loads the bundle and may explain a patient


def _open(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=FIRST_RUN_TIMEOUT)
    at.run()
    if page is not None:
        at.query_params.update(query)
        at.switch_page(page).run()
    return at


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _pipelines_prediction(bundle, spec: Path, patient_id: str):
    cohort = load_cohort(spec)
    position = patient_position(cohort, patient_id)
    return next(iter_predictions(bundle, cohort, [position], PredictOptions()))


def test_settings_come_from_arguments_before_the_environment(tmp_path: Path):
    environ = {"DEEPWE_MODEL": "/env/model", "DEEPWE_COHORT": "/env/c.yaml"}
    given = parse_settings(["--model", str(tmp_path / "m"), "--cohort", str(tmp_path / "c.yaml")], environ)
    assert given == DashboardSettings(model=tmp_path / "m", cohort=tmp_path / "c.yaml", predictions=None)
    assert parse_settings([], environ).model == Path("/env/model")
    with pytest.raises(SettingsError, match=r"deepwe dashboard MODEL_DIR COHORT\.yaml"):
        parse_settings(["--mod", "x", "--cohort", "y"], {})  # no abbreviations: pytest's own flags differ


def test_cohort_page_shows_every_patient_with_the_predicted_risk(
    dashboard_args, dashboard_model, dashboard_cohort, dashboard_predictions
):
    dashboard_args(dashboard_model, dashboard_cohort, dashboard_predictions)
    at = _open()
    _no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    expected = read_predictions(dashboard_predictions).set_index("patient_id")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == str(len(expected))
    shown = at.dataframe[0].value.set_index("patient_id")
    assert list(shown.index) == list(expected.index)
    assert shown["risk"].to_numpy() == pytest.approx(expected["risk"].to_numpy())
    assert len(at.get("vega_lite_chart")) == 2  # risk distribution, availability


def test_patient_page_shows_the_risk_pipelines_computes(
    dashboard_args, dashboard_model, dashboard_cohort, dashboard_predictions, dashboard_bundle, full_patient
):
    dashboard_args(dashboard_model, dashboard_cohort, dashboard_predictions)
    at = _open()
    at.query_params["patient"] = full_patient
    started = time.perf_counter()
    at.switch_page("views/patient.py").run()
    print(f"patient page, first visit (explanation included): {time.perf_counter() - started:.1f} s")
    _no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    expected = _pipelines_prediction(dashboard_bundle, dashboard_cohort, full_patient)
    assert at.metric[0].value == f"{expected.risk:.1%}"
    present = [m for m, flag in expected.modality_present.items() if flag]
    assert [t.label for t in at.tabs] == present
    assert len(at.image) >= 2  # the X-ray and its saliency overlay
    assert any('class="deepwe-note"' in m.value and 'class="note-word"' in m.value for m in at.markdown)
    neighbours = next(d.value for d in at.dataframe if "reference_id" in d.value.columns)
    assert list(neighbours["reference_id"]) == [n.reference_id for n in expected.neighbours]
    started = time.perf_counter()
    at.run()  # the explanation is kept in the session: a rerun is quick
    print(f"patient page, rerun: {time.perf_counter() - started:.2f} s")
    assert at.metric[0].value == f"{expected.risk:.1%}"


def test_unknown_patient_shows_a_message(
    dashboard_args, dashboard_model, dashboard_cohort, dashboard_predictions
):
    dashboard_args(dashboard_model, dashboard_cohort, dashboard_predictions)
    at = _open("views/patient.py", patient="NO-SUCH-PATIENT")
    _no_traceback(at)
    assert any("no patient with id 'NO-SUCH-PATIENT'" in e.value for e in at.error)
    assert not at.metric


def test_missing_predictions_file_shows_a_message(
    dashboard_args, dashboard_model, dashboard_cohort, tmp_path: Path
):
    missing = tmp_path / "nowhere.parquet"
    dashboard_args(dashboard_model, dashboard_cohort, missing)
    at = _open()
    _no_traceback(at)
    assert any(f"predictions file {missing} does not exist" in e.value for e in at.error)


def test_without_predictions_they_are_computed_and_a_corrupt_image_is_a_banner(
    dashboard_args, dashboard_model, broken_image_cohort, dashboard_bundle, full_patient
):
    dashboard_args(dashboard_model, broken_image_cohort)
    at = _open()
    _no_traceback(at)
    expected = _pipelines_prediction(dashboard_bundle, broken_image_cohort, full_patient)
    shown = at.dataframe[0].value.set_index("patient_id")
    assert shown.loc[full_patient, "risk"] == pytest.approx(expected.risk)
    assert shown.loc[full_patient, "failed_to_load"] == "cxr"
    at.query_params["patient"] = full_patient
    at.switch_page("views/patient.py").run()
    _no_traceback(at)
    assert at.metric[0].value == f"{expected.risk:.1%}"
    assert any(e.value.startswith("**cxr** could not be used") for e in at.error)
    assert "cxr" not in [t.label for t in at.tabs]


def test_audit_page_shows_the_evaluation(
    dashboard_args, dashboard_model, dashboard_cohort, dashboard_predictions, dashboard_bundle
):
    dashboard_args(dashboard_model, dashboard_cohort, dashboard_predictions)
    at = _open("views/audit.py")
    at.segmented_control[0].set_value("every labelled patient").run()
    _no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    evaluation = evaluate_predictions(
        read_predictions(dashboard_predictions),
        load_cohort(dashboard_cohort),
        temperature=dashboard_bundle.temperature,
        threshold=dashboard_bundle.threshold,
        split=None,
        n_boot=300,
        classes=dashboard_bundle.classes,
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == str(evaluation.n)
    assert metrics["AUROC"] == f"{evaluation.auroc.estimate:.3f}"
    interval = f"AUROC {evaluation.auroc.estimate:.3f} ({evaluation.auroc.low:.3f}–"
    assert any(interval in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) >= 4  # ROC, PR, calibration, decision curve, weights


def test_batch_page_predicts_a_cohort_and_offers_the_file(
    dashboard_args, dashboard_model, dashboard_cohort, dashboard_predictions, tmp_path: Path
):
    dashboard_args(dashboard_model, dashboard_cohort, dashboard_predictions)
    at = _open("views/batch.py")
    at.text_input[0].set_value(str(tmp_path / "absent.yaml")).run()
    at.button[0].click().run()
    assert any("does not exist" in e.value for e in at.error)
    at.text_input[0].set_value(str(dashboard_cohort)).run()
    at.button[0].click().run(timeout=FIRST_RUN_TIMEOUT)
    _no_traceback(at)
    rows = len(read_predictions(dashboard_predictions))
    assert at.success[0].value.startswith(f"{rows} rows: ")
    assert at.get("download_button")
