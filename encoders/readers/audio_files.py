"""Audio reader: a WAV or FLAC recording in, a mono float32 waveform at the requested rate out."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile

from encoders.readers.errors import ReaderError
from encoders.readers.sniff import EXTENSIONS, file_extension, sniff_file

_SOUNDFILE_ERRORS = (soundfile.SoundFileError, RuntimeError)


def read_audio(
    path: str | Path,
    *,
    sample_rate: int,
    duration_s: float | None = None,
    max_duration_s: float = 600.0,
) -> np.ndarray:
    """Read a recording, mix it down to mono and resample it to ``sample_rate``.

    Channels are averaged; resampling is band-limited (``torchaudio.functional.resample``). With
    ``duration_s`` the waveform keeps its start and is cropped, or zero-padded at the end, to
    exactly ``round(duration_s * sample_rate)`` samples.

    Args:
        path: ``.wav`` or ``.flac`` file.
        sample_rate: output rate in Hz.
        duration_s: output length in seconds, or ``None`` to keep the whole recording.
        max_duration_s: refuse recordings longer than this (checked from the header before reading).

    Returns:
        float32 waveform ``(N,)`` at ``sample_rate``.

    Raises:
        ReaderError: the file is empty, has no frames or channels, is unreadable by libsndfile,
            holds NaN or infinite samples, is too long, or has an unknown extension.
        ValueError: ``sample_rate`` or ``duration_s`` is not positive.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be positive or None, got {duration_s}")
    path = Path(path)
    _check_header(path, max_duration_s)
    try:
        frames, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except _SOUNDFILE_ERRORS as error:
        reason = f"expected a recording libsndfile can decode ({_libsndfile_says(error)})"
        raise ReaderError(path, reason) from error
    if frames.shape[0] == 0 or frames.shape[1] == 0:
        raise ReaderError(path, f"expected audio samples, but it decoded to shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise ReaderError(path, "expected finite samples, but it contains NaN or infinity")
    waveform = frames.mean(axis=1)
    if file_rate != sample_rate:
        waveform = _resample(waveform, file_rate, sample_rate)
    if duration_s is not None:
        waveform = _fit_length(waveform, round(duration_s * sample_rate))
    if not waveform.any():  # the encoder would mask every span: say so instead of dropping it quietly
        kept = "" if duration_s is None else f" of the first {duration_s:g} s"
        raise ReaderError(path, f"expected sound, but every sample{kept} is 0 (a silent recording)")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _check_header(path: Path, max_duration_s: float) -> None:
    """Refuse a file by its extension and header, before any sample is decoded."""
    ext = file_extension(path)
    if ext not in EXTENSIONS["audio"]:
        accepted = ", ".join(EXTENSIONS["audio"])
        raise ReaderError(path, f"unsupported audio extension {ext or '(none)'!r}; accepted: {accepted}")
    problem = sniff_file(path, "audio")  # also refuses 0 bytes, zero frames and zero channels
    if problem:
        raise ReaderError(path, f"expected {problem}")
    try:
        info = soundfile.info(path)
    except _SOUNDFILE_ERRORS as error:
        reason = f"expected a recording libsndfile can read ({_libsndfile_says(error)})"
        raise ReaderError(path, reason) from error
    duration = info.frames / info.samplerate if info.samplerate > 0 else math.inf
    if duration > max_duration_s:
        raise ReaderError(
            path,
            f"expected a recording of at most {max_duration_s:g} s, but its header says {duration:.1f} s",
        )


def _resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling: ``(N,)`` in, ``(ceil(N * to_rate / from_rate),)`` out."""
    import torch
    from torchaudio.functional import resample

    with torch.no_grad():
        return resample(torch.from_numpy(waveform), int(from_rate), int(to_rate)).numpy()


def _fit_length(waveform: np.ndarray, length: int) -> np.ndarray:
    """Crop ``(N,)`` to its first ``length`` samples, or zero-pad it at the end."""
    if waveform.shape[0] >= length:
        return waveform[:length]
    return np.pad(waveform, (0, length - waveform.shape[0]))


def _libsndfile_says(error: BaseException) -> str:
    """libsndfile's own message (it names the format problem, not the content), else the type."""
    return getattr(error, "error_string", None) or type(error).__name__
