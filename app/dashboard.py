"""The DeepWe-MM clinician dashboard (the ``streamlit run`` entry script).

``deepwe dashboard MODEL_DIR COHORT.yaml [--predictions P]`` runs::

    python -m streamlit run app/dashboard.py -- --model MODEL_DIR --cohort COHORT.yaml [--predictions P]

Pages: Cohort (every patient's risk), Patient (one risk explained), Model audit (discrimination,
calibration, subgroups) and Batch (predict another cohort and download the results).
"""

from __future__ import annotations

import streamlit as st

from app.resources import DashboardError, served

DISCLAIMER = "Research software for decision support; not a medical device."


def pages() -> list[st.Page]:
    """The pages, by file relative to this script (``AppTest.switch_page`` opens them the same way)."""
    return [
        st.Page("views/cohort.py", title="Cohort", icon=":material/groups:", url_path="cohort", default=True),
        st.Page("views/patient.py", title="Patient", icon=":material/person:", url_path="patient"),
        st.Page("views/audit.py", title="Model audit", icon=":material/fact_check:", url_path="audit"),
        st.Page("views/batch.py", title="Batch", icon=":material/dataset:", url_path="batch"),
    ]


def sidebar() -> None:
    """Which model and cohort are served (nothing when they cannot load: the page says why)."""
    try:
        current = served()
    except DashboardError:
        return
    manifest = current.bundle.contents.manifest
    st.sidebar.caption(
        f"Model `{current.settings.model.name}` · sha256 `{current.bundle.sha256[:12]}` · trained "
        f"{manifest.created_at:%Y-%m-%d}  \nCohort `{current.cohort.spec.name}` · "
        f"{len(current.cohort.table)} patients"
    )
    st.sidebar.caption(DISCLAIMER)


def main() -> None:
    st.set_page_config(page_title="DeepWe-MM", page_icon=":material/monitor_heart:", layout="wide")
    navigation = st.navigation(pages())
    sidebar()
    navigation.run()


if __name__ == "__main__":
    main()
