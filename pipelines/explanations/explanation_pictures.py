"""The audit report's highlights and colours, for the dashboard.

The dashboard talks to ``pipelines`` only (never ``explain``); it shows an explanation with the same
functions and palette as the report: :mod:`explain.highlight` and :mod:`explain.palette`.
"""

from __future__ import annotations

from explain.highlight import highlighted_note_html, merge_wordpieces, saliency_rgb
from explain.palette import AWAY, INK, NEUTRAL, TOWARDS, rgb

__all__ = [
    "AWAY",
    "INK",
    "NEUTRAL",
    "TOWARDS",
    "highlighted_note_html",
    "merge_wordpieces",
    "rgb",
    "saliency_rgb",
]
