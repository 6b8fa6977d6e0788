"""Pictures for the patient page: numpy RGB arrays for ``st.image`` and the highlighted note as
escaped HTML. No Streamlit, no pyplot.

The note highlight, the image overlay and the colours are the audit report's
(:mod:`pipelines.explanations.explanation_pictures`): attribution towards the positive outcome is red, against
it blue, in every picture.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from pipelines.explanations.explanation_pictures import (
    AWAY,
    TOWARDS,
    highlighted_note_html,
    rgb,
    saliency_rgb,
)

DISPLAY_SIDE = 288
"""Small model inputs (33 x 33 pixels) are enlarged by whole pixels to at least this many pixels."""
RED = np.array(rgb(TOWARDS))
BLUE = np.array(rgb(AWAY))


def _unit(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a constant array becomes zeros; NaN becomes 0."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low, high = values.min(initial=0.0), values.max(initial=0.0)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def enlarge(rgb: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """(H, W, 3) enlarged by the whole factor that brings its longer side to at least ``side``."""
    factor = max(1, -(-side // max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def stretch(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) with rows and columns repeated by whole factors to at least ``height`` x ``width``
    (a spectrogram has few frequency rows and many frames)."""
    rows, columns = max(1, -(-height // rgb.shape[0])), max(1, -(-width // rgb.shape[1]))
    return np.repeat(np.repeat(rgb, rows, axis=0), columns, axis=1)


def _to_uint8(colours: np.ndarray) -> np.ndarray:
    return (np.clip(colours, 0.0, 1.0) * 255).round().astype(np.uint8)


def middle_slice(array: np.ndarray) -> np.ndarray:
    """(C, H, W) from (C, H, W) or, for a volume, the middle depth slice of (C, D, H, W)."""
    array = np.asarray(array)
    if array.ndim == 4:
        return array[:, array.shape[1] // 2]
    if array.ndim != 3:
        raise ValueError(f"expected an image (C, H, W) or a volume (C, D, H, W), got shape {array.shape}")
    return array


def image_rgb(image: np.ndarray) -> np.ndarray:
    """The model's input image as (H', W', 3) uint8: grey from the channel mean, enlarged.

    Args:
        image: (C, H, W) or (C, D, H, W) intensities in any range.
    """
    grey = _unit(middle_slice(image).mean(axis=0))
    return enlarge(_to_uint8(np.repeat(grey[..., None], 3, axis=-1)))


def saliency_overlay(image: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """The image in grey under a red heat map of attribution magnitude, as (H', W', 3) uint8,
    enlarged (the report's overlay, :func:`pipelines.explanations.explanation_pictures.saliency_rgb`).

    Args:
        image: (C, H, W) or (C, D, H, W).
        attribution: the same shape as ``image``.
    """
    image, attribution = middle_slice(image), middle_slice(attribution)
    if image.shape != attribution.shape:
        raise ValueError(f"image {image.shape} and attribution {attribution.shape} differ in shape")
    return enlarge(saliency_rgb(image.mean(axis=0), np.abs(attribution).sum(axis=0)))


SPECTRUM_SHAPE = (176, 480)
"""Least height and width in pixels of a spectrogram picture."""


def sequential_rgb(values: np.ndarray, colormap: str = "magma") -> np.ndarray:
    """(F, T) -> (F', T', 3) uint8, row 0 (the lowest frequency) at the bottom."""
    rgba = colormaps[colormap](_unit(values)[::-1])
    return stretch(_to_uint8(rgba[..., :3]), *SPECTRUM_SHAPE)


def diverging_rgb(values: np.ndarray) -> np.ndarray:
    """(F, T) signed values -> (F', T', 3) uint8: white at 0, red positive, blue negative, row 0 at
    the bottom; symmetric around 0."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))[::-1]
    scale = np.abs(values).max(initial=0.0) or 1.0
    strength = (np.abs(values) / scale)[..., None]
    colour = np.where(values[..., None] >= 0, RED, BLUE)
    return stretch(_to_uint8(1 - strength * (1 - colour)), *SPECTRUM_SHAPE)


def note_html(words: Sequence[tuple[str, float]]) -> str:
    """The note as an HTML fragment, each word shaded by its attribution (red towards the outcome),
    as the report shows it. Every word is HTML-escaped; the only markup is ours.

    Args:
        words: the note's word pieces (or any text units) in order, with their attributions.
    """
    shaded = highlighted_note_html([w for w, _ in words], [float(s) for _, s in words])
    return f'<div class="deepwe-note" style="line-height: 1.9">{shaded}</div>'


def block_reduce(values: np.ndarray, max_points: int, how: str = "mean") -> tuple[np.ndarray, int]:
    """Shorten the first axis to at most ``max_points`` by averaging (``mean``, NaN ignored) or adding
    (``sum``) consecutive blocks.

    Args:
        values: (L, ...).

    Returns:
        ((L', ...), the block length).
    """
    values = np.asarray(values, dtype=np.float64)
    length = values.shape[0]
    block = max(1, -(-length // max_points))
    if block == 1:
        return values, 1
    padded = np.full((-(-length // block) * block, *values.shape[1:]), np.nan)
    padded[:length] = values
    blocks = padded.reshape(-1, block, *values.shape[1:])
    if how == "sum":
        return np.nansum(blocks, axis=1), block
    with warnings.catch_warnings():  # an all-NaN block (no observation) is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=1), block
