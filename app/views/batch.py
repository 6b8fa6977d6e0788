"""Batch page: predict a cohort whose spec the server can read, with progress, and download the
results (the same file ``deepwe predict`` writes).

The output is written to a private temporary folder and handed to this browser session only; the
server's disk is never written elsewhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from app.resources import DashboardError, Served, model_lock, show_page
from pipelines.bundles.bundle_io import BundleError
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.inference.batching import PredictOptions
from pipelines.inference.predict import predict_cohort

RESULT_KEY = "_deepwe_batch"
FORMATS = {"parquet": "application/octet-stream", "csv": "text/csv"}
PROGRESS_STEPS = 20


def run_batch(current: Served, spec: Path, fmt: str) -> dict:
    """Predict every row of the cohort at ``spec``; returns the file's name, bytes and counts.

    Raises:
        DashboardError: the spec is missing or invalid, or does not fit the model.
    """
    if not spec.is_file():
        raise DashboardError(f"cohort spec {spec} does not exist (or is not a file) on the server")
    try:
        total = len(load_cohort(spec).table)
    except SpecError as error:
        raise DashboardError(f"cannot read the cohort:\n{error}") from None
    bar = st.progress(0.0, text=f"0 of {total} patients")
    done = 0

    def advance(records, batch: str) -> None:
        nonlocal done
        done += len(records)
        bar.progress(min(1.0, done / max(1, total)), text=f"{done} of {total} patients")

    options = PredictOptions(chunk_size=max(8, -(-total // PROGRESS_STEPS)))
    with tempfile.TemporaryDirectory(prefix="deepwe-batch-") as folder:
        out = Path(folder) / f"predictions.{fmt}"
        try:
            with model_lock(str(current.settings.model)):
                summary = predict_cohort(
                    current.bundle, spec, out, options, progress=False, on_records=advance
                )
        except SpecError as error:
            shown = "\n".join(f"- {p}" for p in error.problems[:20])
            raise DashboardError(f"this cohort does not fit the model:\n{shown}") from None
        except (BundleError, ValueError, OSError) as error:
            raise DashboardError(f"cannot predict: {error}") from None
        data = out.read_bytes()
    return {
        "name": f"{spec.parent.name or 'cohort'}-predictions.{fmt}",
        "data": data,
        "format": fmt,
        "rows": summary.rows,
        "ok": summary.ok,
        "errors": summary.errors,
        "reasons": dict(summary.error_reasons),
        "seconds": summary.seconds,
    }


def render(current: Served) -> None:
    st.caption(
        "Predict another cohort with the served model: give the path of its spec (YAML) as the server "
        "sees it. One output row per input row, errors captured per row."
    )
    spec = st.text_input("Cohort spec on the server", placeholder="/data/new-cohort/cohort.yaml")
    fmt = st.radio("Output format", list(FORMATS), horizontal=True)
    if st.button("Run prediction", type="primary", disabled=not spec.strip()):
        st.session_state.pop(RESULT_KEY, None)
        try:
            st.session_state[RESULT_KEY] = run_batch(current, Path(spec.strip()).expanduser(), fmt)
        except DashboardError as error:
            st.error(str(error))
    result = st.session_state.get(RESULT_KEY)
    if result is None:
        return
    st.success(
        f"{result['rows']} rows: {result['ok']} predicted, {result['errors']} without a prediction "
        f"({result['seconds']:.1f} s)."
    )
    for reason, count in sorted(result["reasons"].items(), key=lambda kv: -kv[1]):
        st.caption(f"{count} × {reason}")
    st.download_button(
        "Download the predictions",
        data=result["data"],
        file_name=result["name"],
        mime=FORMATS[result["format"]],
        on_click="ignore",
        type="primary",
    )


def main() -> None:
    st.title("Batch prediction")
    show_page(render)


if __name__ == "__main__":
    main()
