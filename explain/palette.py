"""The colours of every picture: the audit report's figures and the dashboard's charts and images.

Attribution towards the outcome (raising the risk) is red, away from it blue, in every picture.
"""

from __future__ import annotations

TOWARDS = "#c0392b"
"""Red: attribution towards the outcome; the calibrated curve."""
AWAY = "#2e6fba"
"""Blue: attribution away from the outcome."""
NEUTRAL = "#8c8c8c"
"""Grey: before calibration, reference strategies."""
INK = "#111827"
"""Near-black: measured values, lines of text weight."""


def rgb(colour: str) -> tuple[float, float, float]:
    """``"#rrggbb"`` as (red, green, blue) in [0, 1].

    Raises:
        ValueError: not a ``#rrggbb`` colour.
    """
    text = colour.removeprefix("#")
    if len(text) != 6:
        raise ValueError(f"expected a colour '#rrggbb', got {colour!r}")
    red, green, blue = (int(text[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return red, green, blue
