"""Hand-made summary features of a cohort, for the gradient-boosting and logistic baselines.

One row per patient, one block of columns per modality, each column named ``"<modality>:<feature>"``.
Every value comes from what the project's readers return (:mod:`encoders.readers`), never from a
second parser of the formats. A missing modality, or a file its reader refuses, leaves its whole
block NaN; the baselines deal with NaN themselves (gradient boosting natively, the logistic model
by median imputation).

What each modality kind gives:

- tabular: numeric variables as they are; each categorical variable one-hot over the categories
  of the cohort (all rows: no outcome is looked at).
- sensor, measurement series (grid slower than 1 Hz: vitals, PhysioNet 2012): per channel the
  first, last, min, max and mean value and the count of measurements, over the spec's window, read
  on a one-minute grid (PhysioNet 2012 times are ``HH:MM``, so every distinct measurement time keeps
  its own cell).
- sensor, waveform (1 Hz or faster: ECG): per channel the amplitude spread and, from the peaks that
  stand out of it (R waves), beat count, mean RR interval, its standard deviation, coefficient of
  variation and RMSSD.
- audio: RMS, peak, frame-energy percentiles and the log power in six frequency bands.
- image: intensity mean, spread, percentiles, bright-pixel fractions and a 4 x 4 thumbnail of block
  means.
- text: word count and 64 hashed word counts (no vocabulary to fit, the same for any split).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_schemas import PatientRecord
from encoders.readers import ReaderError, read_audio, read_image, read_sensor, read_text
from encoders.readers.tabular_files import category_key, numeric_column
from pipelines.cohorts.cohort_table import Cohort

SERIES_STATS = ("first", "last", "min", "max", "mean", "count")
MEASUREMENT_GRID_S = 60.0
WAVEFORM_MIN_RATE_HZ = 1.0
MIN_RR_S = 0.25  # no two beats closer than this (240 bpm)
AUDIO_FRAME_S = 0.05
AUDIO_BANDS_HZ = ((0, 50), (50, 100), (100, 200), (200, 400), (400, 800), (800, 2000))
IMAGE_BLOCKS = 4
TEXT_HASH_FEATURES = 64

Features = dict[str, float]


@dataclass(frozen=True)
class SummaryFeatures:
    """The summary features of a cohort.

    Attributes:
        frame: ``(N, F)`` float64 indexed by patient id (table order); NaN where not observed.
        blocks: modality name -> its columns of ``frame``, in spec order.
        unreadable: modality name -> how many of its files the reader refused (their block is NaN).
    """

    frame: pd.DataFrame
    blocks: dict[str, list[str]]
    unreadable: dict[str, int]

    def columns(self, modalities: Sequence[str]) -> list[str]:
        """The columns of ``modalities`` (for a baseline on some modalities only)."""
        unknown = [m for m in modalities if m not in self.blocks]
        if unknown:
            raise ValueError(f"no features for modalities {unknown}; known: {', '.join(self.blocks)}")
        return [c for m in modalities for c in self.blocks[m]]


def series_summary(values: np.ndarray, observed: np.ndarray, channels: Sequence[str]) -> Features:
    """First, last, min, max, mean and count of each channel of a gridded series.

    Args:
        values: ``(T, C)`` cell values (ignored where not observed).
        observed: ``(T, C)`` bool.
        channels: the ``C`` channel names.

    Returns:
        ``"<channel>:<stat>"`` for every stat of :data:`SERIES_STATS`; NaN (count 0) for a channel
        never observed.
    """
    features: Features = {}
    for c, channel in enumerate(channels):
        seen = values[observed[:, c], c].astype(np.float64)
        stats = dict.fromkeys(SERIES_STATS, math.nan)
        if seen.size:
            stats |= {
                "first": seen[0],
                "last": seen[-1],
                "min": seen.min(),
                "max": seen.max(),
                "mean": seen.mean(),
            }
        stats["count"] = float(seen.size)
        features |= {f"{channel}:{stat}": float(value) for stat, value in stats.items()}
    return features


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
    from sklearn.feature_extraction.text import HashingVectorizer

    hashed = HashingVectorizer(
        n_features=TEXT_HASH_FEATURES, alternate_sign=False, norm=None, lowercase=True
    ).transform([text])
    counts = hashed.toarray()[0]
    words = len(text.split())
    return {"words": float(words), **{f"hash_{i:02d}": float(v) for i, v in enumerate(counts)}}


def _tabular_block(cohort: Cohort, name: str) -> pd.DataFrame:
    """Numeric columns as numbers and categorical columns one-hot, ``(N, F)`` with NaN where missing."""
    modality = cohort.spec.modalities[name]
    table = cohort.table
    block: dict[str, np.ndarray] = {}
    for column in modality.numeric:
        block[f"{name}:{column}"] = numeric_column(table[column])[0]
    for column in modality.categorical:
        cells = table[column]
        missing = (
            cells.isna().to_numpy() | cells.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy()
        )
        keys = np.array(
            [None if m else category_key(v) for v, m in zip(cells, missing, strict=True)], dtype=object
        )
        for category in sorted({k for k in keys if k is not None}):
            one_hot = (keys == category).astype(np.float64)
            one_hot[missing] = np.nan
            block[f"{name}:{column}={category}"] = one_hot
    return pd.DataFrame(block, index=table.index)


def _file_summariser(cohort: Cohort, name: str) -> Callable[[str], Features]:
    """The function that reads one file of modality ``name`` and summarises it."""
    modality = cohort.spec.modalities[name]
    if modality.kind == "text":
        return lambda path: text_summary(read_text(path).text)
    if modality.kind == "image":
        return lambda path: image_summary(read_image(path))
    if modality.kind == "audio":
        rate = modality.sample_rate
        return lambda path: audio_summary(
            read_audio(path, sample_rate=rate, duration_s=modality.duration_s), rate
        )
    read = dict(
        time_column=modality.time_column, time_unit=modality.time_unit, duration_s=modality.duration_s
    )
    if modality.rate_hz >= WAVEFORM_MIN_RATE_HZ:

        def waveform(path: str) -> Features:
            array = read_sensor(path, channels=modality.channels, rate_hz=modality.rate_hz, **read)
            return waveform_summary(array.values, array.observed, array.channels, array.rate_hz)

        return waveform
    grid_rate = max(modality.rate_hz, 1.0 / MEASUREMENT_GRID_S)

    def series(path: str) -> Features:
        array = read_sensor(path, channels=modality.channels, rate_hz=grid_rate, **read)
        return series_summary(array.values, array.observed, array.channels)

    return series


def _file_block(
    cohort: Cohort, name: str, records: Sequence[PatientRecord], unreadable: Counter
) -> pd.DataFrame:
    summarise = _file_summariser(cohort, name)
    rows: list[Features] = []
    for record in records:
        path = record.paths.get(name)
        features: Features = {}
        if path is not None:
            try:
                features = summarise(path)
            except ReaderError:
                unreadable[name] += 1
        rows.append(features)
    block = pd.DataFrame(rows, index=cohort.table.index, dtype=np.float64)
    return block.rename(columns=lambda column: f"{name}:{column}")


def cohort_features(cohort: Cohort, modalities: Sequence[str] | None = None) -> SummaryFeatures:
    """Summary features of every patient of ``cohort``, for ``modalities`` (default: all, spec order).

    Raises:
        ValueError: a name in ``modalities`` is not a modality of the spec.
    """
    names = list(cohort.spec.modalities) if modalities is None else list(modalities)
    unknown = [n for n in names if n not in cohort.spec.modalities]
    if unknown:
        raise ValueError(
            f"{cohort.spec_path}: no modalities {unknown}; the spec has {list(cohort.spec.modalities)}"
        )
    records = list(cohort.records())
    unreadable: Counter = Counter()
    parts, blocks = [], {}
    for name in names:
        if cohort.spec.modalities[name].kind == "tabular":
            block = _tabular_block(cohort, name)
        else:
            block = _file_block(cohort, name, records, unreadable)
        parts.append(block)
        blocks[name] = list(block.columns)
    frame = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=cohort.table.index)
    frame.index = pd.Index([r.patient_id for r in records], name=cohort.spec.id)
    return SummaryFeatures(
        frame.astype(np.float64), blocks, {n: unreadable[n] for n in names if unreadable[n]}
    )
