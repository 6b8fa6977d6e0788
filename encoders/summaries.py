"""Named numbers a tree model can read from one patient's decoded file (a reader's output).

The gradient-boosting teacher of training and the benchmarks' gradient-boosting and logistic
baselines read the same numbers, so the teacher is the baseline a user would otherwise fit:

- waveform (a sensor stream at 1 Hz or faster: ECG): per channel the amplitude spread and, from the
  peaks that stand out of it (R waves), beat count, mean RR interval, its standard deviation,
  coefficient of variation and RMSSD.
- audio: RMS, peak, frame-energy percentiles and the log power in six frequency bands.
- image: intensity mean, spread, percentiles, bright-pixel fractions and a 4 x 4 thumbnail of block
  means.
- text: word count and 64 hashed word counts (no vocabulary to fit, the same for any split).

Every function returns the same names, in the same order, for every input of a modality.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

MIN_RR_S = 0.25  # no two beats closer than this (240 bpm)
AUDIO_FRAME_S = 0.05
AUDIO_BANDS_HZ = ((0, 50), (50, 100), (100, 200), (200, 400), (400, 800), (800, 2000))
IMAGE_BLOCKS = 4
TEXT_HASH_FEATURES = 64

Features = dict[str, float]


def waveform_summary(
    values: np.ndarray, observed: np.ndarray, channels: Sequence[str], rate_hz: float
) -> Features:
    """Amplitude spread and beat-interval statistics of each channel of a waveform.

    Beats are the peaks at least :data:`MIN_RR_S` apart that rise above the median by half the
    distance from the median to the 99.5th percentile (the R waves of an ECG lead).

    Args:
        values: ``(T, C)`` samples; observed: ``(T, C)`` bool; rate_hz: samples per second.

    Returns:
        ``"<channel>:<feature>"`` for sd, p1, p99, beats, rr_mean_s, rr_sd_s, rr_cv and rr_rmssd_s;
        the RR features are NaN with fewer than three beats.
    """
    from scipy.signal import find_peaks

    features: Features = {}
    for c, channel in enumerate(channels):
        signal = values[observed[:, c], c].astype(np.float64)
        out = dict.fromkeys(
            ("sd", "p1", "p99", "beats", "rr_mean_s", "rr_sd_s", "rr_cv", "rr_rmssd_s"), math.nan
        )
        if signal.size:
            median, top = np.median(signal), np.percentile(signal, 99.5)
            out |= {"sd": signal.std(), "p1": np.percentile(signal, 1), "p99": np.percentile(signal, 99)}
            peaks, _ = find_peaks(
                signal, height=median + 0.5 * (top - median), distance=max(1, round(MIN_RR_S * rate_hz))
            )
            out["beats"] = float(peaks.size)
            if peaks.size >= 3:
                rr = np.diff(peaks) / rate_hz
                out |= {
                    "rr_mean_s": rr.mean(),
                    "rr_sd_s": rr.std(),
                    "rr_cv": rr.std() / rr.mean(),
                    "rr_rmssd_s": np.sqrt(np.mean(np.diff(rr) ** 2)) if rr.size > 1 else math.nan,
                }
        features |= {f"{channel}:{name}": float(value) for name, value in out.items()}
    return features


def audio_summary(waveform: np.ndarray, sample_rate: int) -> Features:
    """Loudness and spectral shape of a recording.

    Args:
        waveform: ``(N,)`` mono samples; sample_rate: Hz.

    Returns:
        rms, peak, frame-RMS p10/p50/p90 (frames of :data:`AUDIO_FRAME_S`) and ``band_<lo>_<hi>hz``,
        the log10 mean power of each band of :data:`AUDIO_BANDS_HZ` below the Nyquist frequency.
    """
    x = waveform.astype(np.float64)
    frame = max(1, round(AUDIO_FRAME_S * sample_rate))
    frames = x[: x.size // frame * frame].reshape(-1, frame) if x.size >= frame else x.reshape(1, -1)
    frame_rms = np.sqrt(np.mean(frames**2, axis=1))
    features: Features = {
        "rms": float(np.sqrt(np.mean(x**2))),
        "peak": float(np.abs(x).max()),
        **{f"frame_rms_p{q}": float(np.percentile(frame_rms, q)) for q in (10, 50, 90)},
    }
    power = np.abs(np.fft.rfft(x)) ** 2 / max(1, x.size)
    frequency = np.fft.rfftfreq(x.size, d=1.0 / sample_rate)
    for low, high in AUDIO_BANDS_HZ:
        if low >= sample_rate / 2:
            continue
        band = (frequency >= low) & (frequency < high)
        features[f"band_{low}_{high}hz"] = (
            float(np.log10(power[band].mean() + 1e-12)) if band.any() else math.nan
        )
    return features


def image_summary(image: np.ndarray) -> Features:
    """Intensity statistics and a coarse thumbnail of an image in ``[0, 1]``.

    Args:
        image: ``(1, H, W)`` or ``(1, D, H, W)`` (a volume is averaged over depth for the thumbnail).

    Returns:
        mean, sd, p5/p25/p50/p75/p95, frac_above_0.5/0.7/0.9 and ``block_<i>_<j>``, the mean of each
        cell of a :data:`IMAGE_BLOCKS` x :data:`IMAGE_BLOCKS` grid.
    """
    pixels = image.astype(np.float64)
    flat = pixels.ravel()
    features: Features = {"mean": float(flat.mean()), "sd": float(flat.std())}
    features |= {f"p{q}": float(np.percentile(flat, q)) for q in (5, 25, 50, 75, 95)}
    features |= {f"frac_above_{t}": float((flat > t).mean()) for t in (0.5, 0.7, 0.9)}
    plane = pixels.reshape(-1, *pixels.shape[-2:]).mean(axis=0)
    for i, rows in enumerate(np.array_split(plane, IMAGE_BLOCKS, axis=0)):
        for j, block in enumerate(np.array_split(rows, IMAGE_BLOCKS, axis=1)):
            features[f"block_{i}_{j}"] = float(block.mean()) if block.size else math.nan
    return features


def text_summary(text: str) -> Features:
    """Word count and :data:`TEXT_HASH_FEATURES` hashed word counts of a note (lower-cased unigrams)."""
    return text_summaries([text])[0]


def text_summaries(texts: Sequence[str]) -> list[Features]:
    """:func:`text_summary` of many notes in one vectorised pass (the same numbers)."""
    if not texts:  # the hasher cannot transform an empty list
        return []
    counts = _word_hasher().transform(list(texts)).toarray()
    return [
        {"words": float(len(text.split())), **{f"hash_{i:02d}": float(v) for i, v in enumerate(row)}}
        for text, row in zip(texts, counts, strict=True)
    ]


@functools.cache
def _word_hasher():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=TEXT_HASH_FEATURES, alternate_sign=False, norm=None, lowercase=True)
