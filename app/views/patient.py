"""Patient page: the calibrated risk and why — modality contributions and weights, the top feature
weights, one explained panel per present modality, and the similar reference patients.

The patient comes from the ``?patient=`` query parameter (links from the Cohort page) or the
selector; the explanation is computed once per session and patient.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, frames, pictures
from app.resources import (
    Served,
    explanation,
    patient_ids,
    patient_position_or_none,
    patient_prediction,
    show_page,
)
from data_schemas import PredictionRecord
from pipelines.bundles.model_card import open_gates_note
from pipelines.cohorts.cohort_table import is_missing
from pipelines.explanations.patient_explanation import SELECTED_ABOVE, ModalityExplanation, PatientExplanation

SELECTOR_KEY = "deepwe_patient"
_SEEN_KEY = "_deepwe_patient_from_url"
MAX_SIGNAL_POINTS = 1500


def choose_patient(ids: list[str]) -> str | None:
    """The patient to show: a new ``?patient=`` in the URL, else the selector; the URL follows."""
    requested = st.query_params.get("patient")
    # a link (new URL) or a return to this page (the selector was reset) picks the URL's patient
    if requested is not None and (
        requested != st.session_state.get(_SEEN_KEY) or st.session_state.get(SELECTOR_KEY) is None
    ):
        st.session_state[_SEEN_KEY] = requested
        st.session_state[SELECTOR_KEY] = requested
    choice = st.selectbox(
        "Patient",
        ids,
        key=SELECTOR_KEY,
        index=None,
        placeholder="Choose or type a patient id",
        accept_new_options=True,
    )
    if choice is not None and choice != requested:
        st.query_params["patient"] = choice
        st.session_state[_SEEN_KEY] = choice
    return choice


def risk_panel(current: Served, prediction: PredictionRecord) -> None:
    """The calibrated risk and what it means at the decision threshold."""
    bundle, outcome = current.bundle, current.cohort.spec.outcome or current.bundle.spec.outcome
    classes = bundle.classes
    if prediction.risk is None:  # multiclass
        st.metric("Predicted class", str(prediction.label))
        probabilities = pd.DataFrame(
            {
                "class": list(prediction.probabilities or {}),
                "probability": list((prediction.probabilities or {}).values()),
            }
        )
        st.dataframe(probabilities, hide_index=True)
        return
    threshold = bundle.threshold if bundle.threshold is not None else 0.5
    what = f"{outcome.column} = {classes[1]}" if outcome is not None else f"class {classes[1]}"
    left, right = st.columns([1, 3])
    left.metric(f"Calibrated risk of {what}", f"{prediction.risk:.1%}")
    above = prediction.risk >= threshold
    rule = (bundle.contents.calibration.get("threshold") or {}).get("rule", "no threshold stored; 50 % used")
    right.markdown(
        f"The model's decision threshold is **{threshold:.1%}** ({rule}). This patient's risk is "
        f"**{'at or above' if above else 'below'}** it, so the model labels them **{prediction.label}**"
        f"{' (the positive class)' if above else ''}."
    )
    right.caption(
        f"Calibrated on the validation split (temperature T = {bundle.temperature:.3g}, positive-logit "
        f"shift {bundle.logit_shift:+.3g}), so that "
        f"a risk of {prediction.risk:.0%} is meant to read as about {round(100 * prediction.risk)} in 100 "
        "similar patients having the outcome (the Model audit page shows how well that holds). Decision "
        "support only; it does not replace clinical judgement."
    )


def banners(prediction: PredictionRecord) -> None:
    """Out-of-distribution, failed modalities and missing modalities."""
    if prediction.ood:
        reasons = []
        if prediction.ood_score is not None and prediction.ood_score > 0:
            reasons.append(
                f"its fused embedding is farther from the nearest training patient than "
                f"{prediction.ood_score:.0%} of training patients are from theirs"
            )
        if prediction.out_of_range:
            reasons.append("values outside the training range: " + ", ".join(prediction.out_of_range))
        st.warning(
            "**Out of distribution** — "
            + "; ".join(reasons or ["unlike the training patients"])
            + ". Treat this risk with extra caution.",
            icon=":material/warning:",
        )
    for name, reason in sorted(prediction.modality_errors.items()):
        st.error(
            f"**{name}** could not be used and was treated as missing: {reason}", icon=":material/error:"
        )
    absent = [
        m
        for m, flag in prediction.modality_present.items()
        if not flag and m not in prediction.modality_errors
    ]
    if absent:
        st.info(
            "Not available for this patient (the model predicts without them): " + ", ".join(absent),
            icon=":material/info:",
        )


def contributions_panel(explained: PatientExplanation) -> None:
    """Shapley contributions next to the modality weights."""
    st.subheader("What drove this risk")
    frame = frames.modality_contributions(explained)
    left, right = st.columns(2)
    left.altair_chart(
        charts.signed_bars(frame, "modality", "shapley", "Contribution to the risk (Shapley)"),
        width="stretch",
    )
    right.altair_chart(
        charts.plain_bars(frame, "modality", "modality_weight", "Modality weights (attention)"),
        width="stretch",
    )
    st.caption(
        f"Shapley values split the risk among the modalities: starting from {explained.base_value:.1%} "
        f"(the training reference cohort's rate), they add up to "
        f"{explained.base_value + sum(explained.shapley.values()):.1%}. Modality weights are the model's "
        "own attention over the modalities this patient has (missing ones get 0)."
    )


def features_panel(current: Served, explained: PatientExplanation) -> None:
    st.subheader("Top feature weights")
    frame = frames.top_features(explained)
    frame.insert(0, "feature", frame["modality"] + " · " + frame["token"])
    st.altair_chart(
        charts.plain_bars(frame, "feature", "feature_weight", "Feature weights (inside each modality)"),
        width="stretch",
    )
    chosen = sum(int(item.selected.sum()) for item in explained.modalities.values())
    observed = sum(int((item.feature_weights > 0).sum()) for item in explained.modalities.values())
    st.caption(
        f"Selected for this patient: {chosen} of {observed} observed features (weight above {SELECTED_ABOVE}; a "
        "feature below it was mostly replaced by a learned baseline before the model read it)."
    )
    if note := open_gates_note(current.bundle.metrics):
        st.warning(note)


def _token_frame(item: ModalityExplanation) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "token": item.tokens,
            "attribution": item.token_attribution.tolist(),
            "feature_weight": item.feature_weights.tolist(),
            "selected": item.selected.tolist(),
        }
    )


def tabular_panel(
    current: Served, name: str, item: ModalityExplanation, prediction: PredictionRecord
) -> None:
    """Each value with its training range, attribution and weight."""
    position = patient_position_or_none(current, prediction.patient_id)
    row = current.cohort.table.iloc[position] if position is not None else {}
    state = current.bundle.preprocessing["tabular"].get(name, {})
    ranges = {item_["name"]: (item_["min"], item_["max"]) for item_ in state.get("numeric", [])}
    frame = _token_frame(item)
    values, range_text, outside = [], [], []
    for token in item.tokens:
        cell = row.get(token) if token in current.cohort.table.columns else None
        values.append("missing" if is_missing(cell) else str(cell))
        low, high = ranges.get(token, (None, None))
        range_text.append("" if low is None else f"{low:g} – {high:g}")
        outside.append(f"{name}.{token}" in prediction.out_of_range)
    frame.insert(1, "value", values)
    frame.insert(2, "training_range", range_text)
    frame.insert(3, "outside_range", outside)
    st.dataframe(frame, hide_index=True, width="stretch")
    st.altair_chart(
        charts.signed_bars(frame, "token", "attribution", "Attribution per variable"), width="stretch"
    )


def statistics_panel(item: ModalityExplanation) -> None:
    """Per-channel statistic tokens ("Lactate (last)"): the measured ones with their value,
    attribution and weight, the largest attributions charted."""
    frame = _token_frame(item)
    values = item.extras["input"].reshape(-1).tolist()
    frame.insert(1, "value", [f"{v:.4g}" for v in values] + [""] * (len(frame) - len(values)))
    frame = frame[item.feature_weights.numpy() > 0].reset_index(drop=True)
    st.dataframe(frame, hide_index=True, width="stretch")
    largest = frame.reindex(frame["attribution"].abs().sort_values(ascending=False).index).head(25)
    st.altair_chart(
        charts.signed_bars(largest, "token", "attribution", "Largest attributions per statistic"),
        width="stretch",
    )


def text_panel(item: ModalityExplanation) -> None:
    """The note with each word shaded by its attribution."""
    words = item.extras.get("words")
    if words is None:  # sentence tokens without word-level attribution
        words = list(zip(item.tokens, item.token_attribution.tolist(), strict=True))
    st.markdown(pictures.note_html(words), unsafe_allow_html=True)
    st.caption("Red words push the risk up, blue words push it down; hover a word for its attribution.")
    st.altair_chart(
        charts.signed_bars(_token_frame(item), "token", "attribution", "Attribution per note segment"),
        width="stretch",
    )


def image_panel(item: ModalityExplanation) -> None:
    """The image as the model saw it, beside its saliency overlay."""
    image = item.extras["input"].numpy()
    attribution = item.attribution.detach().float().cpu().numpy()
    left, right = st.columns(2)
    left.image(pictures.image_rgb(image), caption="as the model sees it", width="content")
    right.image(
        pictures.saliency_overlay(image, attribution), caption="attribution magnitude (red)", width="content"
    )
    st.dataframe(_token_frame(item), hide_index=True)


def audio_panel(current: Served, name: str, item: ModalityExplanation) -> None:
    """Player, waveform, spectrogram and its attribution."""
    config = current.bundle.contents.config["encoders"][name]["config"]
    rate = int(config.get("sample_rate") or current.bundle.spec.modalities[name].sample_rate)
    wave = item.extras["input"].numpy().reshape(-1)
    st.audio(wave.astype(np.float32), sample_rate=rate)
    shown, block = pictures.block_reduce(wave, MAX_SIGNAL_POINTS)
    st.line_chart(
        pd.DataFrame({"seconds": np.arange(len(shown)) * block / rate, "amplitude": shown}),
        x="seconds",
        y="amplitude",
        height=160,
    )
    left, right = st.columns(2)
    left.image(pictures.sequential_rgb(item.extras["spectrum"].numpy()), caption="log-mel spectrogram")
    right.image(
        pictures.diverging_rgb(item.attribution.detach().float().cpu().numpy()),
        caption="attribution (red raises the risk)",
    )
    attribution = item.token_attribution.numpy()
    st.bar_chart(
        pd.DataFrame(
            {
                "seconds": np.round(
                    np.arange(len(attribution)) * len(wave) / rate / max(1, len(attribution)), 3
                ),
                "raises the risk": np.clip(attribution, 0, None),
                "lowers the risk": np.clip(attribution, None, 0),
            }
        ),
        x="seconds",
        y=["raises the risk", "lowers the risk"],
        y_label="attribution",
        color=[charts.RED, charts.BLUE],
        height=260,
    )


def sensor_panel(current: Served, name: str, item: ModalityExplanation) -> None:
    """Each channel in its own units over a shading of the attribution in time."""
    spec = current.bundle.spec.modalities[name]
    stats = current.bundle.preprocessing["sensor"].get(name, {})
    values = item.extras["input"].numpy()  # (L, C) standardised
    observed = item.extras["observed"].numpy().astype(bool)
    mean = np.asarray(stats.get("mean", np.zeros(values.shape[1])), dtype=float)
    std = np.asarray(stats.get("std", np.ones(values.shape[1])), dtype=float)
    real = np.where(observed, values * std + mean, np.nan)
    attribution = item.attribution.detach().float().cpu().numpy().reshape(values.shape).sum(axis=1)
    real, block = pictures.block_reduce(real, MAX_SIGNAL_POINTS)
    attribution, _ = pictures.block_reduce(attribution, MAX_SIGNAL_POINTS, how="sum")
    seconds = block / spec.rate_hz
    unit, per = ("h", 3600.0) if seconds * len(real) > 4 * 3600 else ("s", 1.0)
    start = np.arange(len(real)) * seconds / per
    channels = list(spec.channels)
    frame = pd.DataFrame(
        {
            "time": np.repeat(start, len(channels)),
            "time_end": np.repeat(start + seconds / per, len(channels)),
            "channel": channels * len(real),
            "value": real.reshape(-1),
            "attribution": np.repeat(attribution, len(channels)),
        }
    )
    st.altair_chart(charts.sensor_chart(frame, unit), width="stretch")
    st.caption("Shading: attribution of each time span (red raises the risk); gaps: nothing observed.")


def modality_panels(current: Served, explained: PatientExplanation) -> None:
    st.subheader("Each modality explained")
    names = list(explained.modalities)
    if not names:
        st.info("No modality to explain.")
        return
    for tab, name in zip(st.tabs(names), names, strict=True):
        item = explained.modalities[name]
        with tab:
            st.caption(f"{item.kind} · {item.method}; baseline: {item.baseline}.")
            if item.kind == "tabular":
                tabular_panel(current, name, item, explained.prediction)
            elif item.kind == "text":
                text_panel(item)
            elif item.kind == "image":
                image_panel(item)
            elif item.kind == "audio":
                audio_panel(current, name, item)
            elif item.kind == "sensor" and item.extras.get("statistics"):
                statistics_panel(item)
            elif item.kind == "sensor":
                sensor_panel(current, name, item)


def neighbours_panel(prediction: PredictionRecord) -> None:
    st.subheader("Similar patients")
    if not prediction.neighbours:
        st.info("The model has no reference cohort to compare with.")
        return
    st.dataframe(
        pd.DataFrame([n.model_dump() for n in prediction.neighbours]),
        hide_index=True,
        column_config={"weight": st.column_config.NumberColumn("graph weight", format="%.3f")},
    )
    st.caption("Training patients (pseudonymous ids) the model attends to, with their outcomes.")


def method_notes(explained: PatientExplanation) -> None:
    with st.expander("How these explanations were computed"):
        rows = [
            {
                "modality": name,
                "method": item.method,
                "baseline": item.baseline,
                "relative completeness error": item.relative_delta,
                "weight-attribution agreement": None if math.isnan(item.agreement) else item.agreement,
            }
            for name, item in explained.modalities.items()
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        trees = (
            ""
            if explained.tree_score is None
            else f" Of the score {explained.score:.2f}, {explained.tree_score:.2f} is the tree evidence "
            "(gradient-boosted trees in the model), credited to the tabular values and series "
            "statistics along the trees' decision paths."
        )
        st.caption(f"{explained.score_name}; Integrated Gradients with {explained.steps} steps.{trees}")


def render(current: Served) -> None:
    patient_id = choose_patient(patient_ids(current))
    if patient_id is None:
        st.info("Choose a patient, or open one from the Cohort page.")
        return
    prediction = patient_prediction(current, patient_id)
    if prediction.status != "ok":
        st.error(f"No prediction for this patient: {prediction.error}")
        return
    # everything the prediction itself says first: the explanation takes longer
    risk_panel(current, prediction)
    banners(prediction)
    neighbours_panel(prediction)
    with st.spinner("Explaining this prediction…", show_time=True):
        explained = explanation(current, patient_id)
    contributions_panel(explained)
    features_panel(current, explained)
    modality_panels(current, explained)
    method_notes(explained)


def main() -> None:
    st.title("Patient")
    show_page(render)


if __name__ == "__main__":
    main()
