"""Interactive charts (Altair, which Streamlit draws with ``st.altair_chart``).

Colours are the audit report's (:mod:`pipelines.explanations.explanation_pictures`): red towards the positive
outcome, blue against it.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from pipelines.explanations.explanation_pictures import AWAY as BLUE
from pipelines.explanations.explanation_pictures import INK
from pipelines.explanations.explanation_pictures import NEUTRAL as GREY
from pipelines.explanations.explanation_pictures import TOWARDS as RED

SPARSE_POINTS = 200  # sensor channels with at most this many observations show each one as a dot


def signed_bars(frame: pd.DataFrame, category: str, value: str, title: str) -> alt.Chart:
    """Horizontal bars, in the frame's order, red where ``value`` > 0 and blue where < 0."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort=None, title=None),
            x=alt.X(f"{value}:Q", title=value.replace("_", " ")),
            color=alt.condition(f"datum.{value} >= 0", alt.value(RED), alt.value(BLUE)),
            tooltip=list(frame.columns),
        )
    )


def plain_bars(frame: pd.DataFrame, category: str, value: str, title: str) -> alt.Chart:
    """Horizontal bars in the frame's order, one colour."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar(color=GREY)
        .encode(
            y=alt.Y(f"{category}:N", sort=None, title=None),
            x=alt.X(f"{value}:Q", title=value.replace("_", " ")),
            tooltip=list(frame.columns),
        )
    )


def sensor_chart(frame: pd.DataFrame, unit: str, width: int = 760) -> alt.FacetChart:
    """One panel per channel: the observed values over a shading of the attribution in time.

    Args:
        frame: long format, one line per (time block, channel): ``time``, ``time_end``, ``channel``,
            ``value`` (NaN where nothing was observed) and ``attribution`` (the block's attribution,
            all channels together).
        unit: the time unit of ``time`` (for the axis title).
        width: of each panel in pixels (faceted charts do not stretch to their container).
    """
    scale = float(np.nanmax(np.abs(frame["attribution"].to_numpy(dtype=float)), initial=0.0)) or 1.0
    sparse = frame.groupby("channel")["value"].count().max() <= SPARSE_POINTS
    points = alt.OverlayMarkDef(size=12, color=INK) if sparse else False
    shading = (
        alt.Chart()
        .mark_rect(opacity=0.45)
        .encode(
            x=alt.X("time:Q", title=f"time ({unit})", scale=alt.Scale(nice=False)),
            x2="time_end:Q",
            color=alt.Color(
                "attribution:Q",
                scale=alt.Scale(domain=[-scale, 0, scale], range=[BLUE, "#ffffff", RED]),
                legend=alt.Legend(title="attribution"),
            ),
        )
    )
    line = (
        alt.Chart()
        .mark_line(color=INK, strokeWidth=1.2, point=points)
        .encode(
            x="time:Q",
            y=alt.Y("value:Q", scale=alt.Scale(zero=False), title=None),
            tooltip=["channel", "time", "value", "attribution"],
        )
    )
    return (
        alt.layer(shading, line, data=frame)
        .properties(height=110, width=width)
        .facet(
            row=alt.Row(
                "channel:N",
                title=None,
                sort=list(dict.fromkeys(frame["channel"])),
                header=alt.Header(labelAngle=0, labelAlign="left"),
            )
        )
        .resolve_scale(y="independent")
    )


def curve(frame: pd.DataFrame, x: str, y: str, title: str, diagonal: bool) -> alt.LayerChart:
    """A curve drawn in the frame's ``order`` (ROC, precision-recall), with the chance diagonal."""
    line = (
        alt.Chart(frame, title=title)
        .mark_line(color=RED, interpolate="step-after" if not diagonal else "linear")
        .encode(
            x=alt.X(f"{x}:Q", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(domain=[0, 1])),
            order="order:Q",
        )
    )
    if not diagonal:
        return alt.layer(line)
    chance = (
        alt.Chart(pd.DataFrame({x: [0.0, 1.0], y: [0.0, 1.0]}))
        .mark_line(color=GREY, strokeDash=[4, 4])
        .encode(x=f"{x}:Q", y=f"{y}:Q")
    )
    return alt.layer(chance, line)


def reliability(frame: pd.DataFrame) -> alt.LayerChart:
    """Observed rate against mean risk per bin, for each ``version`` (after/before recalibration).

    Args:
        frame: ``version``, ``mean_risk``, ``observed_rate``, ``count``; empty bins left out.
    """
    ideal = (
        alt.Chart(pd.DataFrame({"mean_risk": [0.0, 1.0], "observed_rate": [0.0, 1.0]}))
        .mark_line(color=GREY, strokeDash=[4, 4])
        .encode(x="mean_risk:Q", y="observed_rate:Q")
    )
    points = (
        alt.Chart(frame, title="Calibration")
        .mark_line(point=True)
        .encode(
            x=alt.X("mean_risk:Q", scale=alt.Scale(domain=[0, 1]), title="mean predicted risk"),
            y=alt.Y("observed_rate:Q", scale=alt.Scale(domain=[0, 1]), title="observed rate"),
            color=alt.Color(
                "version:N",
                scale=alt.Scale(domain=["calibrated", "before temperature scaling"], range=[RED, GREY]),
            ),
            tooltip=["version", "mean_risk", "observed_rate", "count"],
        )
    )
    return alt.layer(ideal, points)


def decision_curve(frame: pd.DataFrame, top: float) -> alt.Chart:
    """Net benefit against threshold, one line per ``strategy``, clipped to [-0.05, ``top``]."""
    return (
        alt.Chart(frame, title="Decision curve")
        .mark_line(clip=True)
        .encode(
            x=alt.X("threshold:Q", title="risk threshold"),
            y=alt.Y("net_benefit:Q", title="net benefit", scale=alt.Scale(domain=[-0.05, top], clamp=True)),
            color=alt.Color("strategy:N", scale=alt.Scale(range=[RED, GREY, INK])),
        )
    )
