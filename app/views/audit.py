"""Model audit page: the audit report's content, interactive — discrimination with intervals, ROC and
precision-recall curves, calibration, the decision curve, subgroups, missing-modality patterns and
the model's global weights."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import charts, frames
from app.resources import DashboardError, Served, predictions, show_page
from pipelines.api import evaluate
from pipelines.evaluation.evaluation import Evaluation, GroupMetrics, Interval
from pipelines.inference.batching import token_modalities

SPLITS = {"test": "test", "validation": "val", "training": "train", "every labelled patient": None}
BOOTSTRAP = 300  # resamples per interval: enough for a screen; `deepwe evaluate` uses more
# (no bare string literals at module level in page scripts: Streamlit's "magic" would print them)


@st.cache_resource(show_spinner="Evaluating the predictions…")
def _evaluation(
    model: str, cohort: str, source: str, split: str | None, _frame: pd.DataFrame, _current: Served
) -> Evaluation:
    """One evaluation per server, model, cohort, predictions source and split (cohort-wide, no
    patient detail)."""
    try:
        return evaluate(_current.bundle, _current.cohort, predictions=_frame, split=split, n_boot=BOOTSTRAP)
    except ValueError as error:
        raise DashboardError(f"cannot evaluate these predictions: {error}") from None


def _estimate(value: Interval | None) -> str:
    if value is None or value.estimate is None or math.isnan(value.estimate):
        return "n/a"
    return f"{value.estimate:.3f}"


def _interval(value: Interval | None) -> str:
    if value is None or value.estimate is None or math.isnan(value.estimate):
        return "n/a"
    if value.low is None or math.isnan(value.low):
        return f"{value.estimate:.3f}"
    return f"{value.estimate:.3f} ({value.low:.3f}–{value.high:.3f})"


def headline(evaluation: Evaluation) -> None:
    columns = st.columns(6)
    columns[0].metric("Patients", evaluation.n, help=f"excluded: {evaluation.excluded}")
    columns[1].metric("Positives", "n/a" if evaluation.positives is None else evaluation.positives)
    columns[2].metric("AUROC", _estimate(evaluation.auroc))
    columns[3].metric("AUPRC", _estimate(evaluation.auprc))
    after = evaluation.calibration.get("after")
    if after is not None:
        columns[4].metric("Brier", f"{after.brier:.3f}")
        columns[5].metric("ECE", f"{after.ece:.3f}")
    level = f"{evaluation.level:.0%}"
    st.caption(
        f"{level} bootstrap intervals ({evaluation.n_boot} resamples): AUROC {_interval(evaluation.auroc)}, "
        f"AUPRC {_interval(evaluation.auprc)}."
    )
    for note in evaluation.notes:
        st.info(note)


def curves(current: Served, frame: pd.DataFrame, split: str | None) -> None:
    labels, risk = frames.labelled_risks(frame, current.cohort, current.bundle.classes[-1], split)
    roc, pr = frames.roc_pr_points(labels, risk)
    if roc.empty:
        st.info("ROC and precision-recall curves need patients of both outcomes in this split.")
        return
    left, right = st.columns(2)
    left.altair_chart(charts.curve(roc, "fpr", "tpr", "ROC curve", diagonal=True), width="stretch")
    right.altair_chart(
        charts.curve(pr, "recall", "precision", "Precision-recall curve", diagonal=False), width="stretch"
    )


def calibration(evaluation: Evaluation) -> None:
    if not evaluation.calibration:
        return
    rows = [
        {"version": label, "mean_risk": b.mean_risk, "observed_rate": b.observed_rate, "count": b.count}
        for key, label in (("after", "calibrated"), ("before", "before temperature scaling"))
        for b in evaluation.calibration[key].bins
        if b.count > 0
    ]
    left, right = st.columns(2)
    left.altair_chart(charts.reliability(pd.DataFrame(rows)), width="stretch")
    after = evaluation.calibration["after"]
    left.caption(f"Calibration slope {after.slope:.2f}, intercept {after.intercept:.2f} (ideal: 1 and 0).")
    curve = evaluation.decision_curve
    if curve is not None:
        frame = pd.DataFrame(
            [
                {"threshold": t, "strategy": name, "net_benefit": v}
                for name, values in (
                    ("model", curve.model),
                    ("treat all", curve.treat_all),
                    ("treat none", curve.treat_none),
                )
                for t, v in zip(curve.thresholds, values, strict=True)
            ]
        )
        top = max(0.05, *curve.model[:1], *curve.treat_all[:1])
        right.altair_chart(charts.decision_curve(frame, top), width="stretch")
    threshold = evaluation.threshold
    if threshold is not None:
        st.markdown(
            f"At the decision threshold **{threshold.threshold:.1%}** ({threshold.source}): sensitivity "
            f"{threshold.sensitivity:.2f}, specificity {threshold.specificity:.2f}, PPV {threshold.ppv:.2f}, "
            f"NPV {threshold.npv:.2f} — TP {threshold.tp}, FP {threshold.fp}, TN {threshold.tn}, FN {threshold.fn}."
        )


def _groups(groups: list[GroupMetrics]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "group": g.group,
                "value": g.value,
                "patients": g.n,
                "positives": g.positives,
                "AUROC (95% CI)": _interval(g.auroc),
                "AUPRC (95% CI)": _interval(g.auprc),
                "note": g.reason or "",
            }
            for g in groups
        ]
    )


def slices(evaluation: Evaluation) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Subgroups")
        if evaluation.subgroups:
            st.dataframe(_groups(evaluation.subgroups), hide_index=True)
        else:
            st.info("The cohort spec names no subgroup columns.")
    with right:
        st.subheader("Missing-modality patterns")
        st.dataframe(_groups(evaluation.modality_patterns), hide_index=True)


def global_weights(current: Served, frame: pd.DataFrame) -> None:
    st.subheader("Global weights")
    weights = frames.mean_modality_weights(frame, current.modalities)
    left, right = st.columns(2)
    left.altair_chart(
        charts.plain_bars(
            weights, "modality", "mean_weight_when_present", "Mean modality weight (when present)"
        ),
        width="stretch",
    )
    hidden = [m for m, spec in current.bundle.spec.modalities.items() if spec.kind == "text"]
    hidden += token_modalities(current.bundle)
    right.dataframe(frames.frequent_features(frame, sorted(set(hidden))), hide_index=True)
    right.caption("Tokens most often among a patient's top feature weights (note text is never pooled).")


def render(current: Served) -> None:
    frame = predictions(current)
    choice = st.segmented_control("Patients evaluated", list(SPLITS), default="test")
    split = SPLITS[choice or "test"]
    source = str(current.settings.predictions or "computed")
    evaluation = _evaluation(
        str(current.settings.model), str(current.settings.cohort), source, split, frame, current
    )
    headline(evaluation)
    if evaluation.task == "binary":
        curves(current, frame, evaluation.split)
        calibration(evaluation)
        slices(evaluation)
    global_weights(current, frame)
    with st.expander("Model card"):
        st.markdown(current.bundle.contents.model_card)


def main() -> None:
    st.title("Model audit")
    show_page(render)


if __name__ == "__main__":
    main()
