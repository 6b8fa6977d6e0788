"""Cohort page: every patient with their risk, label and missing modalities; filters; the risk
distribution and the availability of each modality. Opens a patient on the Patient page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import frames
from app.resources import Served, other_model_rows, predictions, show_page

PATIENT_PAGE = "views/patient.py"


def filters(table: pd.DataFrame, modalities: list[str]) -> pd.DataFrame:
    """The patients that pass the filters the user sets."""
    left, middle, right = st.columns(3)
    labels = sorted(table["label"].dropna().unique().tolist())
    chosen = left.multiselect("Label", labels, default=labels)
    low, high = middle.slider("Risk", 0.0, 1.0, (0.0, 1.0), step=0.01)
    lacking = right.multiselect("Missing or failed modality", modalities)
    only_ood = left.checkbox("Only out of distribution")
    only_errors = middle.checkbox("Only rows without a prediction")
    keep = table["label"].isin(chosen) | table["label"].isna()
    risk = table["risk"].fillna(-1.0)
    keep &= table["risk"].isna() | ((risk >= low) & (risk <= high))
    for m in lacking:
        keep &= table["missing"].str.split(", ").map(lambda v, m=m: m in v) | table[
            "failed_to_load"
        ].str.split(", ").map(lambda v, m=m: m in v)
    if only_ood:
        keep &= table["out_of_distribution"]
    if only_errors:
        keep &= table["status"] != "ok"
    return table[keep]


def patient_table(table: pd.DataFrame) -> None:
    """The table (sortable by any column header); choosing a row opens that patient."""
    if table["error"].isna().all():
        table = table.drop(columns="error")
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="cohort_table",
        column_config={
            "risk": st.column_config.ProgressColumn("risk", min_value=0.0, max_value=1.0, format="percent"),
            "out_of_distribution": st.column_config.CheckboxColumn("out of distribution"),
        },
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if rows:
        st.switch_page(PATIENT_PAGE, query_params={"patient": str(table.iloc[rows[0]]["patient_id"])})
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Open a patient", table["patient_id"].tolist(), index=None, key="cohort_open")
    if right.button("Open", disabled=chosen is None, type="primary"):
        st.switch_page(PATIENT_PAGE, query_params={"patient": chosen})


def summary(current: Served, table: pd.DataFrame) -> None:
    ok = table[table["status"] == "ok"]
    positive = current.bundle.classes[-1]
    columns = st.columns(4)
    columns[0].metric("Patients", len(table))
    columns[1].metric("Predicted", len(ok), help="rows with a prediction; the others had no usable input")
    if ok["risk"].notna().any():
        columns[2].metric(f"Labelled {positive}", int((ok["label"] == positive).sum()))
    columns[3].metric("Out of distribution", int(table["out_of_distribution"].sum()))


def charts(current: Served, table: pd.DataFrame, frame: pd.DataFrame) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Risk distribution")
        histogram = frames.risk_histogram(table["risk"].to_numpy(dtype=float))
        st.bar_chart(histogram, x="risk", y="patients", height=260)
        if current.bundle.threshold is not None:
            st.caption(f"Decision threshold: {current.bundle.threshold:.1%}.")
    with right:
        st.subheader("Availability per modality")
        available = frames.availability(frame, current.modalities)
        st.bar_chart(available, x="modality", y="present_percent", height=260, sort=False)
        st.dataframe(available, hide_index=True)


def render(current: Served) -> None:
    frame = predictions(current)
    other = other_model_rows(frame, current.bundle)
    if other:
        st.warning(
            f"{other} prediction rows were made by another model than the one served; their risks may "
            "differ from the Patient page's."
        )
    table = frames.cohort_table(frame, current.modalities)
    summary(current, table)
    shown = filters(table, current.modalities)
    st.caption(f"{len(shown)} of {len(table)} patients shown. Click a column header to sort.")
    patient_table(shown)
    charts(current, table, frame)


def main() -> None:
    st.title("Cohort")
    show_page(render)


if __name__ == "__main__":
    main()
