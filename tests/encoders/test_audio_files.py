"""read_audio on WAV and FLAC files synthesised with numpy and written by soundfile in tmp_path."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile

from encoders.readers.audio_files import read_audio
from encoders.readers.errors import ReaderError


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """``(N,)`` sine wave."""
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)


def peak_hz(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.argmax(spectrum) * rate / len(waveform))


def test_float_stereo_wav_is_averaged_to_mono(tmp_path):
    left, right = tone(440, 8000, 0.5), tone(97, 8000, 0.5, amplitude=0.3)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 8000, "FLOAT")

    waveform = read_audio(tmp_path / "stereo.wav", sample_rate=8000)

    assert waveform.shape == (4000,) and waveform.dtype == np.float32
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-6)


def test_int16_stereo_wav_is_read_as_float(tmp_path):
    left = tone(440, 8000, 0.5)
    soundfile.write(tmp_path / "pcm.wav", np.stack([left, -left], axis=1) * [1, 0.5], 8000, "PCM_16")

    waveform = read_audio(tmp_path / "pcm.wav", sample_rate=8000)

    np.testing.assert_allclose(waveform, left / 4, atol=2 / 32768)


@pytest.mark.parametrize(("file_rate", "sample_rate"), [(16_000, 4_000), (8_000, 22_050)])
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_resampling_keeps_the_tone(tmp_path, file_rate, sample_rate, suffix):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, tone(440, file_rate, 1.0), file_rate)

    waveform = read_audio(path, sample_rate=sample_rate)

    assert waveform.shape == (sample_rate,)  # 1 s
    assert abs(peak_hz(waveform, sample_rate) - 440) <= 1.0  # one FFT bin of a 1 s window
    assert 0.45 < np.abs(waveform).max() < 0.55  # amplitude kept


def test_duration_crops_the_end_or_pads_with_zeros(tmp_path):
    source = tone(440, 4000, 2.0) * np.linspace(0, 1, 8000)  # a ramp, so start and end differ
    soundfile.write(tmp_path / "two_s.wav", source, 4000, "FLOAT")

    cropped = read_audio(tmp_path / "two_s.wav", sample_rate=4000, duration_s=1.25)
    padded = read_audio(tmp_path / "two_s.wav", sample_rate=4000, duration_s=2.5)

    assert cropped.shape == (5000,) and padded.shape == (10000,)
    np.testing.assert_allclose(cropped, source[:5000], atol=1e-6)  # the start is kept
    np.testing.assert_allclose(padded[:8000], source, atol=1e-6)
    assert not padded[8000:].any()


def test_duration_after_resampling_is_exact(tmp_path):
    soundfile.write(tmp_path / "tone.flac", tone(300, 44_100, 0.7), 44_100)

    waveform = read_audio(tmp_path / "tone.flac", sample_rate=2_000, duration_s=0.3337)

    assert waveform.shape == (round(0.3337 * 2_000),)


def test_empty_text_and_frameless_wavs_are_refused(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "note.wav").write_text("heart sounds normal\n")
    soundfile.write(tmp_path / "silent.wav", np.zeros((0, 1)), 8000)

    with pytest.raises(ReaderError, match="0 bytes"):
        read_audio(tmp_path / "empty.wav", sample_rate=4000)
    with pytest.raises(ReaderError, match="looks like text") as caught:
        read_audio(tmp_path / "note.wav", sample_rate=4000)
    assert "heart" not in str(caught.value)  # the reason never quotes the content
    with pytest.raises(ReaderError, match="0 frames"):
        read_audio(tmp_path / "silent.wav", sample_rate=4000)


def test_wav_header_with_zero_channels_is_refused(tmp_path):
    fmt = struct.pack("<HHIIHH", 1, 0, 8000, 0, 0, 16)  # PCM, 0 channels
    data = b"\x00" * 64
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    riff += b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "nochannel.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)

    with pytest.raises(ReaderError, match="libsndfile refused"):
        read_audio(tmp_path / "nochannel.wav", sample_rate=4000)


def test_not_finite_samples_are_refused(tmp_path):
    soundfile.write(tmp_path / "nan.wav", np.array([0.1, np.nan, -0.1]), 8000, "FLOAT")

    with pytest.raises(ReaderError, match="NaN or infinity"):
        read_audio(tmp_path / "nan.wav", sample_rate=8000)


def test_too_long_recording_is_refused_from_its_header(tmp_path):
    soundfile.write(tmp_path / "long.flac", np.zeros(8000 * 3), 8000)

    with pytest.raises(ReaderError, match=r"at most 2 s, but its header says 3\.0 s"):
        read_audio(tmp_path / "long.flac", sample_rate=8000, max_duration_s=2)


def test_unknown_extension_and_bad_arguments(tmp_path):
    soundfile.write(tmp_path / "tone.wav", tone(440, 8000, 0.1), 8000)
    (tmp_path / "tone.mp3").write_bytes((tmp_path / "tone.wav").read_bytes())

    with pytest.raises(ReaderError, match=r"'\.mp3'; accepted: \.wav, \.flac"):
        read_audio(tmp_path / "tone.mp3", sample_rate=8000)
    with pytest.raises(ValueError, match="sample_rate"):
        read_audio(tmp_path / "tone.wav", sample_rate=0)
    with pytest.raises(ValueError, match="duration_s"):
        read_audio(tmp_path / "tone.wav", sample_rate=8000, duration_s=0)
