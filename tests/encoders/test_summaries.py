"""Summaries of one decoded file, the numbers trees read (the teacher, the baselines): each on
arrays with a known answer, and every file encoder gives the same names for every sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoders import create_encoder
from encoders.summaries import audio_summary, image_summary, text_summary, waveform_summary


def _pulses(beat_times: np.ndarray, rate: float, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    signal = 0.02 * np.sin(2 * np.pi * 0.3 * t)  # baseline wander
    for beat in beat_times:
        signal += np.exp(-(((t - beat) / 0.01) ** 2))  # R wave
        signal += 0.3 * np.exp(-(((t - beat - 0.25) / 0.05) ** 2))  # T wave, must not count
    return signal.reshape(-1, 1)


def test_waveform_summary_finds_r_waves_and_rr_variability():
    rate = 250.0
    regular = _pulses(np.arange(0.4, 9.9, 0.8), rate, 10.0)  # 75 bpm
    features = waveform_summary(regular, np.ones_like(regular, dtype=bool), ["II"], rate)
    assert features["II:beats"] == 12
    assert features["II:rr_mean_s"] == pytest.approx(0.8, abs=0.01)
    assert features["II:rr_sd_s"] < 0.01
    irregular = _pulses(np.cumsum([0.4, 0.6, 1.1, 0.5, 0.9, 0.7, 1.2, 0.6]), rate, 10.0)
    jittery = waveform_summary(irregular, np.ones_like(irregular, dtype=bool), ["II"], rate)
    assert jittery["II:rr_sd_s"] > 0.2
    assert jittery["II:rr_cv"] > 10 * features["II:rr_cv"]


def test_waveform_summary_of_a_flat_or_unobserved_channel_has_no_rr_features():
    flat = np.zeros((500, 1))
    features = waveform_summary(flat, np.zeros_like(flat, dtype=bool), ["II"], 250.0)
    assert all(math.isnan(v) for v in features.values())


def test_audio_summary_puts_a_tone_in_its_band_and_skips_bands_above_nyquist():
    rate = 1000
    t = np.arange(3 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 250 * t)).astype(np.float32)
    features = audio_summary(tone, rate)
    bands = {k: v for k, v in features.items() if k.startswith("band_")}
    assert max(bands, key=bands.get) == "band_200_400hz"
    assert "band_800_2000hz" not in bands  # 800 Hz is above the 500 Hz Nyquist frequency
    assert features["rms"] == pytest.approx(0.5 / math.sqrt(2), rel=1e-3)
    assert features["peak"] == pytest.approx(0.5, rel=1e-3)


def test_image_summary_locates_a_bright_region_in_the_thumbnail():
    image = np.zeros((1, 33, 41), dtype=np.float32)
    image[0, :8, :10] = 1.0  # top-left block of a 4 x 4 grid
    features = image_summary(image)
    blocks = {k: v for k, v in features.items() if k.startswith("block_")}
    assert len(blocks) == 16
    assert max(blocks, key=blocks.get) == "block_0_0"
    assert features["frac_above_0.9"] == pytest.approx(80 / (33 * 41))
    volume = image_summary(np.stack([image, image], axis=1))  # (1, 2, H, W)
    assert volume["block_0_0"] == pytest.approx(features["block_0_0"])


def test_text_summary_counts_words_and_hashes_deterministically():
    text = "Nursing note, day 1. Severe respiratory distress. Severe."
    features = text_summary(text)
    assert features["words"] == 8
    hashed = [v for k, v in features.items() if k.startswith("hash_")]
    assert len(hashed) == 64
    assert sum(hashed) == 7  # unigrams of two or more characters; "1" is not one
    assert text_summary(text) == features
    assert text_summary("Alert and comfortable.") != features


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("image", {"out_dim": 8, "image_size": 32, "backbone": "resnet18"}),
        ("audio", {"out_dim": 8, "sample_rate": 2000, "duration_s": 1.0}),
        ("sensor", {"channels": 2, "out_dim": 8}),
    ],
)
def test_a_file_encoder_summarises_every_sample_under_the_same_names(kind, config):
    encoder = create_encoder(kind, **config)
    samples = encoder.example_samples(3, np.random.default_rng(0))
    summaries = [encoder.sample_summary(sample) for sample in samples]
    assert all(list(s) == list(summaries[0]) for s in summaries) and len(summaries[0]) > 0
    assert all(isinstance(v, float) for s in summaries for v in s.values())


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("image", {"out_dim": 8, "image_size": 32, "backbone": "resnet18"}),
        ("sensor", {"channels": 2, "out_dim": 8}),
        ("text-tiny", {}),
    ],
)
def test_a_batch_of_summaries_holds_each_samples_numbers_and_nan_for_a_missing_one(kind, config):
    encoder = create_encoder(kind, **config)
    samples = encoder.example_samples(3, np.random.default_rng(1))
    width = len(encoder.sample_summary(samples[0]))
    batch = encoder.summary_tensor([samples[0], None, samples[1], samples[2]], width).numpy()
    assert batch.shape == (4, width) and np.isnan(batch[1]).all()
    for row, sample in zip((0, 2, 3), samples, strict=True):
        np.testing.assert_array_equal(batch[row], list(encoder.sample_summary(sample).values()))
    assert np.isnan(encoder.summary_tensor([None], width).numpy()).all()  # a batch without the modality
