"""Highlighting what an explanation points at: word pieces merged into words, a note shaded word by
word, and an image under a heat map of attribution magnitude. Plain numpy and HTML, no plotting
library: the audit report and the dashboard show the same highlights.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from explain.palette import AWAY, TOWARDS, rgb

_SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})
_CLOSING_PUNCTUATION = frozenset(".,;:!?%)]}")
NOTE_OPACITY = 0.85
"""Opacity of the strongest word's shading (readable text needs a cap)."""
OVERLAY_OPACITY = 0.65
"""Opacity of the heat map where attribution is strongest."""


def merge_wordpieces(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """Join WordPiece continuations (``"##"``) to the word before them, summing their scores.

    Args:
        tokens: ``T`` tokens as the tokenizer wrote them.
        scores: ``(T,)`` one attribution per token; non-finite scores count as 0.

    Returns:
        ``(word, score)`` pairs, without the tokenizer's special markers such as ``[CLS]``.
    """
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens for {len(scores)} scores")
    words: list[tuple[str, float]] = []
    for token, score in zip(tokens, scores, strict=True):
        value = float(score) if math.isfinite(float(score)) else 0.0
        if token in _SPECIAL_TOKENS:
            continue
        if token.startswith("##") and words:
            word, total = words[-1]
            words[-1] = (word + token[2:], total + value)
        else:
            words.append((token.removeprefix("##"), value))
    return words


def highlighted_note_html(tokens: Sequence[str], scores: Sequence[float]) -> str:
    """A clinical note as an HTML fragment, each word shaded by its attribution.

    Red marks words that push towards the outcome, blue away; opacity is ``|score| / max |score|``
    (at most :data:`NOTE_OPACITY`). Every word is HTML-escaped, so the fragment is safe to embed.

    Args:
        tokens: ``T`` tokens (WordPiece continuations start with ``"##"``).
        scores: ``(T,)`` signed attribution per token.

    Returns:
        A ``<p class="highlighted-note">`` element of ``<span class="note-word">`` words.
    """
    words = merge_wordpieces(tokens, scores)
    peak = max((abs(score) for _, score in words), default=0.0)
    towards, away = (", ".join(f"{round(c * 255)}" for c in rgb(colour)) for colour in (TOWARDS, AWAY))
    pieces: list[str] = []
    for i, (word, score) in enumerate(words):
        # The title attribute keeps the exact value.
        alpha = NOTE_OPACITY * abs(score) / peak if peak > 0 else 0.0
        span = (
            f'<span class="note-word" style="background-color: rgba({towards if score >= 0 else away}, '
            f'{alpha:.3f})" title="{html.escape(f"{score:+.4g}")}">{html.escape(word)}</span>'
        )
        glued = i > 0 and word and all(ch in _CLOSING_PUNCTUATION for ch in word)
        pieces.append(span if i == 0 or glued else " " + span)
    return '<p class="highlighted-note">' + "".join(pieces) + "</p>"


def resize_bilinear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array with pixel-centre alignment (as PIL and OpenCV do).

    Args:
        array: ``(h, w)`` values.
        shape: ``(H, W)`` target size.

    Returns:
        ``(H, W)`` float64 array.
    """
    array = np.asarray(array, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    out_h, out_w = shape

    def coordinates(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, source - low

    y0, y1, fy = coordinates(array.shape[0], out_h)
    x0, x1, fx = coordinates(array.shape[1], out_w)
    rows = array[y0] * (1 - fy)[:, None] + array[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None, :] + rows[:, x1] * fx[None, :]


def normalised_magnitude(values: np.ndarray) -> np.ndarray:
    """``|values| / max |values|`` (NaN as 0; all zeros stay zeros)."""
    magnitude = np.abs(np.nan_to_num(np.asarray(values, dtype=float)))
    peak = magnitude.max() if magnitude.size else 0.0
    return magnitude / peak if peak > 0 else magnitude


def saliency_rgb(image: np.ndarray, saliency: np.ndarray, opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """The image in grey under a red heat map of attribution magnitude.

    Args:
        image: ``(H, W)`` grey levels, any range (scaled min to max; NaN as 0).
        saliency: ``(h, w)`` signed attribution at any resolution, resized bilinearly to ``(H, W)``
            and shown as ``|saliency| / max |saliency|``.
        opacity: the heat map's opacity where the magnitude is largest.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    image = np.nan_to_num(np.asarray(image, dtype=float))
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {image.shape}")
    low, high = image.min(initial=0.0), image.max(initial=0.0)
    grey = ((image - low) / (high - low) if high > low else np.zeros_like(image))[..., None]
    heat = opacity * normalised_magnitude(resize_bilinear(saliency, image.shape))[..., None]
    blended = grey * (1 - heat) + np.array(rgb(TOWARDS)) * heat
    return (np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8)
