"""What the pages share: the model and cohort loaded once per server, the cohort's predictions made
once per server, and explanations kept per browser session.

Cached resources are shared by every user of the server, so only cohort-wide things are cached
(``st.cache_resource``); anything about one patient lives in ``st.session_state``. The model is one
``nn.Module`` for all sessions, and attribution hooks modules while it runs, so model work is
serialised by a lock.

Every failure the user can cause or fix (a missing file, a bundle that does not verify, a predictions
file of another cohort, an unknown patient) becomes a :class:`DashboardError` whose message the page
shows with ``st.error``; nothing here logs patient data.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from app.settings import DashboardSettings, SettingsError, parse_settings
from data_schemas import PredictionRecord
from data_schemas.cohort_spec import canonical_label
from pipelines.api import predict_table
from pipelines.bundles.bundle_io import BundleError
from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.cohorts.cohort_table import Cohort, load_cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.explanations.explaining import UnknownPatient, explain_patient, patient_position
from pipelines.explanations.patient_explanation import PatientExplanation
from pipelines.inference.batching import PredictOptions, check_compatible, iter_predictions
from pipelines.inference.output_table import read_predictions, row_to_record

EXPLAIN_STEPS = 32
"""Integrated Gradients steps on the patient page (as ``deepwe explain``)."""
KEPT_EXPLANATIONS = 4
"""Explanations a session keeps, most recent first: going back to a patient is instant."""
REQUIRED_COLUMNS = ("row", "patient_id", "status", "risk", "label", "modality_present")


class DashboardError(Exception):
    """A problem to show on the page as it is (no traceback)."""


@dataclass(frozen=True)
class Served:
    """The model and cohort this server shows."""

    settings: DashboardSettings
    bundle: Bundle
    cohort: Cohort

    @property
    def modalities(self) -> list[str]:
        """The model's modalities, in its order."""
        return list(self.bundle.spec.modalities)


def current_settings() -> DashboardSettings:
    return parse_settings(sys.argv[1:], os.environ)


@st.cache_resource(show_spinner="Loading and verifying the model bundle…")
def _bundle(path: str) -> Bundle:
    return load_bundle(path, device="cpu")


@st.cache_resource(show_spinner="Reading the cohort…")
def _cohort(path: str) -> Cohort:
    return load_cohort(path)


@st.cache_resource
def model_lock(model: str) -> threading.Lock:
    """The lock that serialises work on the model at ``model`` across sessions."""
    return threading.Lock()


def served() -> Served:
    """The model and cohort of this server (loaded on first use).

    Raises:
        DashboardError: no settings, a bundle that does not verify, an unreadable cohort, or a cohort
            the model cannot predict.
    """
    try:
        settings = current_settings()
    except SettingsError as error:
        raise DashboardError(str(error)) from None
    if not settings.model.is_dir():
        raise DashboardError(f"model bundle folder {settings.model} does not exist")
    if not settings.cohort.is_file():
        raise DashboardError(f"cohort spec {settings.cohort} does not exist")
    try:
        bundle = _bundle(str(settings.model))
    except BundleError as error:
        raise DashboardError(f"cannot load the model: {error}") from None
    try:
        cohort = _cohort(str(settings.cohort))
    except SpecError as error:
        raise DashboardError(f"cannot read the cohort:\n{error}") from None
    problems = check_compatible(bundle, cohort)
    if problems:
        shown = "\n".join(f"- {p}" for p in problems[:10])
        raise DashboardError(f"this cohort does not fit the model:\n{shown}")
    return Served(settings, bundle, cohort)


@st.cache_resource(show_spinner="Predicting every patient of the cohort (once per server)…")
def _computed_predictions(model: str, cohort: str) -> pd.DataFrame:
    bundle, table = _bundle(model), _cohort(cohort)
    with model_lock(model):
        return predict_table(bundle, table)


@st.cache_resource(show_spinner="Reading the predictions file…")
def _file_predictions(path: str, cohort: str) -> pd.DataFrame:
    file = Path(path)
    if not file.is_file():
        raise DashboardError(
            f"predictions file {file} does not exist; run `deepwe predict` first, or start the dashboard "
            "without --predictions to compute them"
        )
    try:
        frame = read_predictions(file)
    except (OSError, ValueError) as error:
        raise DashboardError(f"cannot read predictions file {file} ({error.__class__.__name__})") from None
    check_predictions(frame, _cohort(cohort), file)
    return frame


def check_predictions(frame: pd.DataFrame, cohort: Cohort, file: Path) -> None:
    """Refuse a predictions table that is not a ``deepwe predict`` output for this cohort.

    Raises:
        DashboardError: columns missing, repeated rows, or rows whose patient id is not the cohort's.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DashboardError(f"{file}: not a `deepwe predict` output (no column(s) {missing})")
    rows = frame["row"].to_numpy()
    if len(set(rows.tolist())) != len(rows):
        raise DashboardError(f"{file}: some rows appear twice (unmerged shards?)")
    n = len(cohort.table)
    ids = cohort.table[cohort.spec.id].to_numpy()
    for row, patient in zip(rows, frame["patient_id"], strict=True):
        if not 1 <= int(row) <= n or canonical_label(patient) != canonical_label(ids[int(row) - 1]):
            raise DashboardError(
                f"{file}: row {int(row)} does not match the cohort table {cohort.table_path.name}; "
                "were these predictions made on another cohort?"
            )


def predictions(current: Served) -> pd.DataFrame:
    """The cohort's predictions: the ``--predictions`` file, else computed once per server.

    Raises:
        DashboardError: the file is missing, unreadable or of another cohort.
    """
    if current.settings.predictions is not None:
        return _file_predictions(str(current.settings.predictions), str(current.settings.cohort))
    return _computed_predictions(str(current.settings.model), str(current.settings.cohort))


def other_model_rows(frame: pd.DataFrame, bundle: Bundle) -> int:
    """Prediction rows made by another model than the one served."""
    if "model_sha256" not in frame.columns:
        return 0
    return int((frame["model_sha256"].astype(str) != bundle.sha256).sum())


def patient_ids(current: Served) -> list[str]:
    return current.cohort.table[current.cohort.spec.id].astype(str).str.strip().tolist()


def patient_prediction(current: Served, patient_id: str) -> PredictionRecord:
    """The patient's prediction: the cohort predictions' row when the served model made it, else
    computed now.

    Raises:
        DashboardError: the id is not in the cohort.
    """
    try:
        position = patient_position(current.cohort, patient_id)
    except UnknownPatient as error:
        raise DashboardError(str(error)) from None
    try:
        frame = predictions(current)
    except DashboardError:
        frame = None
    if frame is not None:
        match = frame[frame["row"] == position + 1]
        if len(match) == 1 and str(match.iloc[0].get("model_sha256")) == current.bundle.sha256:
            return row_to_record(match.iloc[0].to_dict())
    with model_lock(str(current.settings.model)):
        return next(iter_predictions(current.bundle, current.cohort, [position], PredictOptions()))


def explanation(current: Served, patient_id: str, steps: int = EXPLAIN_STEPS) -> PatientExplanation:
    """The patient's explanation, computed once per session (the last few are kept).

    Raises:
        DashboardError: unknown id, or a row that cannot be explained (no usable modality).
    """
    kept: OrderedDict = st.session_state.setdefault("_deepwe_explanations", OrderedDict())
    key = (current.bundle.sha256, str(current.settings.cohort), patient_id, steps)
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    try:
        with model_lock(str(current.settings.model)):
            result = explain_patient(current.bundle, current.cohort, patient_id, steps=steps)
    except UnknownPatient as error:
        raise DashboardError(str(error)) from None
    except ValueError as error:
        raise DashboardError(str(error)) from None
    kept[key] = result
    while len(kept) > KEPT_EXPLANATIONS:
        kept.popitem(last=False)
    return result


LOG = logging.getLogger("deepwe.dashboard")


def show_page(render: Callable[[Served], None]) -> None:
    """Run a page's ``render`` with the served model and cohort; failures become ``st.error``.

    A :class:`DashboardError` shows its message. Anything else shows a generic message and logs the
    exception's type and code location only: its message may hold patient data.
    """
    try:
        render(served())
    except DashboardError as error:
        st.error(str(error))
    except Exception as error:  # the last guard: a page never shows a traceback
        LOG.error(
            "dashboard page failed with %s\n%s",
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )
        st.error("Something went wrong on this page; the server log says where.")


def patient_position_or_none(current: Served, patient_id: str) -> int | None:
    """The 0-based table position of the patient, or None for an unknown id."""
    try:
        return patient_position(current.cohort, patient_id)
    except UnknownPatient:
        return None
