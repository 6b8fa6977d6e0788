"""What each array encoder promises beyond the shared contract of ``test_conformance.py``."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from encoders import create_encoder
from encoders.audio import AudioEncoder, AudioEncoderConfig
from encoders.image import ImageEncoder, ImageEncoderConfig, build_backbone
from encoders.readers.sensor_files import SensorArray, read_sensor
from encoders.readers.tabular_files import TabularPreprocessor
from encoders.sensor import SensorEncoder, SensorEncoderConfig
from encoders.tabular import TabularEncoder, TabularEncoderConfig
from tests.conftest import shared_file

# ----------------------------------------------------------------------------- tabular


def _row(numeric, missing, codes):
    return {
        "numeric": np.array(numeric, dtype=np.float32),
        "numeric_missing": np.array(missing, dtype=bool),
        "categorical": np.array(codes, dtype=np.int64),
    }


def test_tabular_tokens_are_the_variables_and_missing_ones_are_masked_out():
    encoder = create_encoder("tabular-tiny").eval()  # age, lactate, creatinine; sex, icu_type
    batch = encoder.collate([_row([0.5, 0.0, -1.0], [False, True, False], [0, 1]), None])
    tokens = encoder(batch)
    assert tokens.names[0] == ["age", "lactate", "creatinine", "sex", "icu_type", "missing pattern"]
    assert tokens.names[1] == tokens.names[0]
    # lactate missing (flag) and sex missing (code 0); icu_type unknown (code 1) is observed;
    # the missing-pattern token is observed for every present patient.
    assert tokens.mask[0].tolist() == [True, False, True, False, True, True]
    assert not tokens.mask[1].any()


def test_tabular_scalar_features_are_the_values_and_codes_with_nan_where_missing():
    encoder = create_encoder("tabular-tiny")  # age, lactate, creatinine; sex, icu_type
    batch = encoder.collate([_row([0.5, 0.0, -1.0], [False, True, False], [0, 2]), None])
    features = encoder.scalar_features(batch).numpy()
    assert features.shape == (2, 5)
    np.testing.assert_array_equal(features[0], [0.5, np.nan, -1.0, np.nan, 2.0])
    assert np.isnan(features[1]).all()


def test_tabular_missing_pattern_token_carries_missingness():
    encoder = create_encoder("tabular-tiny").eval()
    lactate_missing = encoder(encoder.collate([_row([0.5, 0.0, -1.0], [False, True, False], [2, 3])])).values
    all_observed = encoder(encoder.collate([_row([0.5, 0.0, -1.0], [False, False, False], [2, 3])])).values
    assert (lactate_missing[0, -1] - all_observed[0, -1]).abs().max() > 1e-4
    without = create_encoder("tabular-tiny", missingness_token=False).eval()
    assert without.token_names == ["age", "lactate", "creatinine", "sex", "icu_type"]


def test_tabular_variables_have_one_token_each():
    encoder = create_encoder("tabular-tiny").eval()
    before = encoder(encoder.collate([_row([0.5, 1.0, -1.0], [False] * 3, [2, 3])])).values
    after = encoder(encoder.collate([_row([2.5, 1.0, -1.0], [False] * 3, [2, 3])])).values
    changed = (before - after).abs().amax(dim=2)[0] > 1e-6
    assert changed.tolist() == [True, False, False, False, False, False]


def test_tabular_ignores_whatever_sits_in_a_missing_slot():
    encoder = create_encoder("tabular-tiny").eval()
    clean = encoder(encoder.collate([_row([0.5, 0.0, 1.0], [False, True, False], [2, 0])]))
    noisy = encoder(encoder.collate([_row([0.5, np.nan, 1.0], [False, True, False], [2, 0])]))
    assert torch.equal(clean.values, noisy.values)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"numeric": np.zeros(2), "numeric_missing": np.zeros(3, bool), "categorical": [2, 2]},
            "'numeric' of shape \\(3,\\), got \\(2,\\)",
        ),
        (_row([0.5, 1.0, np.inf], [False] * 3, [2, 2]), "not finite"),
        (_row([0.5, 1.0, 0.0], [False] * 3, [2, 7]), "'icu_type': expected codes 0"),
        ({"numeric": np.zeros(3), "numeric_missing": np.zeros(3, bool)}, "key 'categorical'"),
    ],
)
def test_tabular_collate_says_what_was_expected(row, message):
    with pytest.raises(ValueError, match=message):
        create_encoder("tabular-tiny").collate([row])


def test_tabular_config_needs_one_vocabulary_size_per_categorical_variable():
    with pytest.raises(ValueError, match="one vocabulary size per categorical variable"):
        TabularEncoderConfig(numeric=("age",), categorical=("sex",), categories=())
    with pytest.raises(ValueError, match="at least one"):
        TabularEncoderConfig(numeric=(), categorical=(), categories=())
    config = TabularEncoderConfig(numeric=["age"], categorical=[], categories=[])
    assert config.numeric == ("age",) and config.categorical == ()


def test_tabular_reads_what_the_tabular_preprocessor_writes():
    frame = pd.DataFrame(
        {
            "age": [71.0, None, 45.0, 60.0],
            "lactate": [2.1, 4.0, None, 1.2],
            "sex": ["F", "M", None, "F"],
            "icu_type": ["medical", "surgical", "cardiac", "other"],
        }
    )
    preprocessor = TabularPreprocessor(["age", "lactate"], ["sex", "icu_type"]).fit(frame[:3])
    arrays = preprocessor.transform(frame)
    encoder = TabularEncoder(
        TabularEncoderConfig(
            numeric=preprocessor.numeric,
            categorical=preprocessor.categorical,
            categories=tuple(len(preprocessor.vocabularies_[c]) for c in preprocessor.categorical),
            out_dim=9,
        )
    ).eval()
    rows = [
        {
            "numeric": arrays.numeric[i],
            "numeric_missing": arrays.numeric_missing[i],
            "categorical": arrays.categorical[i],
        }
        for i in range(len(frame))
    ]
    tokens = encoder(encoder.collate(rows))
    assert tokens.names[0] == [*arrays.names, "missing pattern"]
    assert tokens.mask.tolist() == [
        [True, True, True, True, True],
        [False, True, True, True, True],
        [True, False, False, True, True],
        [True, True, True, True, True],  # "other" was not in training: unknown, but observed
    ]


# ----------------------------------------------------------------------------- image


def test_image_collate_resizes_any_size_to_the_configured_one():
    encoder = create_encoder("image-tiny")  # image_size 45
    samples = [np.full((1, 20, 71), 0.25, np.float32), None, np.full((1, 300, 9), 1.0, np.float32)]
    images = encoder.collate(samples).tensors["image"]
    assert images.shape == (3, 1, 45, 45)
    torch.testing.assert_close(images[0], torch.full((1, 45, 45), 0.25))
    assert not images[1].any()
    torch.testing.assert_close(images[2], torch.ones(1, 45, 45))


def test_image_collate_refuses_a_volume_for_a_2d_encoder():
    with pytest.raises(ValueError, match=r"\(1, H, W\) array for spatial_dims=2"):
        create_encoder("image-tiny").collate([np.zeros((1, 4, 20, 20), np.float32)])


def test_image_regions_are_named_by_their_place_in_the_feature_map():
    encoder = create_encoder("image-tiny")
    assert encoder.region_names == ["region 0,0", "region 0,1", "region 1,0", "region 1,1"]


def test_image_volumes_go_through_a_3d_monai_resnet():
    config = ImageEncoderConfig(out_dim=7, backbone="resnet10", spatial_dims=3, image_size=33)
    encoder = ImageEncoder(config).eval()
    volumes = [np.random.default_rng(0).random((1, 12, 40, 30), dtype=np.float32), None]
    with torch.no_grad():
        tokens = encoder(encoder.collate(volumes))
    assert tokens.values.shape == (2, 8, 7)
    assert tokens.names[0][0] == "region 0,0,0" and tokens.names[0][-1] == "region 1,1,1"
    assert tokens.mask.tolist() == [[True] * 8, [False] * 8]
    assert torch.isfinite(tokens.values).all()


def test_image_config_refuses_a_2d_backbone_for_volumes_and_unknown_models():
    with pytest.raises(ValueError, match="3-D volumes use a MONAI ResNet"):
        ImageEncoderConfig(spatial_dims=3, backbone="test_resnet")
    with pytest.raises(ValueError, match="not a timm model"):
        create_encoder("image-tiny", backbone="no_such_net")


def test_building_image_encoders_never_touches_the_network(monkeypatch):
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    create_encoder("image")
    create_encoder("image-tiny")
    ImageEncoder(ImageEncoderConfig(backbone="resnet10", spatial_dims=3, image_size=33))
    assert attempts == []


def test_image_backbone_loads_a_local_safetensors_checkpoint(tmp_path):
    source = create_encoder("image-tiny").eval()
    path = tmp_path / "backbone.safetensors"
    save_file({key: value.contiguous() for key, value in source.backbone.state_dict().items()}, path)
    loaded = create_encoder("image-tiny", checkpoint=str(path)).eval()
    fresh = create_encoder("image-tiny").eval()
    images = torch.rand(2, 1, 45, 45)
    with torch.no_grad():
        expected = source.backbone(images)[-1]
        torch.testing.assert_close(loaded.backbone(images)[-1], expected)
        assert not torch.allclose(fresh.backbone(images)[-1], expected)


def test_image_checkpoint_with_a_colour_stem_is_summed_to_one_channel(tmp_path):
    colour = build_backbone("test_resnet", 2)
    colour.conv1[0] = torch.nn.Conv2d(3, colour.conv1[0].out_channels, 3, 2, 1, bias=False)
    path = tmp_path / "rgb.safetensors"
    save_file({key: value.contiguous() for key, value in colour.state_dict().items()}, path)
    encoder = create_encoder("image-tiny", checkpoint=str(path))
    stem = encoder.backbone.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(stem, colour.state_dict()["conv1.0.weight"].sum(1, keepdim=True))


def test_image_checkpoint_of_another_model_is_refused_with_its_path(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(2, 3)}, path)
    with pytest.raises(ValueError, match=r"other\.safetensors: the checkpoint lacks"):
        create_encoder("image-tiny", checkpoint=str(path))
    with pytest.raises(ValueError, match="not found"):
        create_encoder("image-tiny", checkpoint=str(tmp_path / "absent.safetensors"))


# ----------------------------------------------------------------------------- audio


def test_audio_tokens_are_named_by_their_time_span():
    encoder = create_encoder("audio-tiny")  # 0.5 s at 1 kHz, 0.1 s per token
    assert encoder.token_names == [
        "t=0.00-0.10s",
        "t=0.10-0.20s",
        "t=0.20-0.30s",
        "t=0.30-0.40s",
        "t=0.40-0.50s",
    ]


def test_audio_collate_crops_and_pads_and_silent_padding_is_masked():
    encoder = create_encoder("audio-tiny").eval()
    rng = np.random.default_rng(0)
    long = rng.standard_normal(730).astype(np.float32)
    short = rng.standard_normal(250).astype(np.float32)
    batch = encoder.collate([long, short])
    assert batch.tensors["waveform"].shape == (2, 500)
    torch.testing.assert_close(batch.tensors["waveform"][0], torch.from_numpy(long[:500]))
    assert not batch.tensors["waveform"][1, 250:].any()
    assert encoder(batch).mask.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_audio_collate_refuses_a_stereo_waveform():
    with pytest.raises(ValueError, match=r"mono \(N,\) waveform, got shape \(500, 2\)"):
        create_encoder("audio-tiny").collate([np.zeros((500, 2), np.float32)])


def test_audio_config_checks_the_spectrogram_settings():
    with pytest.raises(ValueError, match="hop_length <= n_fft"):
        AudioEncoderConfig(n_fft=64, hop_length=128)
    with pytest.raises(ValueError, match="n_mels"):
        AudioEncoderConfig(n_fft=64, n_mels=40)
    assert AudioEncoder(AudioEncoderConfig()).token_names[-1] == "t=9.80-10.00s"


# ----------------------------------------------------------------------------- sensor


def _series(values, observed, rate_hz=1 / 60, start_s=0.0):
    values = np.asarray(values, dtype=np.float32)
    return SensorArray(
        values=values,
        observed=np.asarray(observed, dtype=bool),
        channels=tuple(f"c{i}" for i in range(values.shape[1])),
        rate_hz=rate_hz,
        start_s=start_s,
    )


def test_sensor_windows_are_named_in_seconds_from_the_start():
    encoder = SensorEncoder(SensorEncoderConfig(channels=1))  # 60 cells per token
    grid = _series(np.ones((150, 1)), np.ones((150, 1)))  # one cell per minute, 2.5 hours
    assert encoder.collate([grid]).names == [["t=0-3600s", "t=3600-7200s", "t=7200-10800s"]]
    late = _series(np.ones((6, 1)), np.ones((6, 1)), rate_hz=4.0, start_s=1.5)
    assert encoder.collate([late]).names == [["t=1.5-16.5s"]]


def test_sensor_window_without_an_observation_is_masked_and_padding_too():
    encoder = create_encoder("sensor-tiny").eval()  # 3 channels, 6 cells per window
    observed = np.zeros((13, 3), dtype=bool)
    observed[[0, 12], 1] = True  # window 0 and window 2; window 1 has nothing
    gappy = _series(np.where(observed, 1.0, 0.0), observed)
    short = _series(np.ones((4, 3)), np.ones((4, 3)))
    batch = encoder.collate([gappy, short, None])
    assert batch.tensors["values"].shape == (3, 18, 3)
    tokens = encoder(batch)
    assert tokens.mask.tolist() == [[True, False, True], [True, False, False], [False] * 3]
    assert tokens.names[2] == ["window 0", "window 1", "window 2"]


def test_sensor_ignores_whatever_sits_in_an_unobserved_cell():
    encoder = create_encoder("sensor-tiny").eval()
    rng = np.random.default_rng(1)
    observed = rng.random((12, 3)) < 0.5
    values = rng.standard_normal((12, 3))
    clean = encoder(encoder.collate([_series(np.where(observed, values, 0.0), observed)]))
    noisy = encoder(encoder.collate([_series(np.where(observed, values, np.nan), observed)]))
    assert torch.equal(clean.values, noisy.values)


def test_sensor_collate_refuses_the_wrong_channel_count():
    with pytest.raises(ValueError, match=r"shape \(T, 3\)"):
        create_encoder("sensor-tiny").collate([_series(np.zeros((6, 2)), np.ones((6, 2)))])


@pytest.mark.realdata
def test_sensor_encodes_a_physionet_2012_stay():
    path = shared_file("physionet2012", "set-a", "132539.txt")
    channels = ("HR", "MAP", "Lactate", "Temp")
    stay = read_sensor(path, channels=channels, rate_hz=1 / 60, duration_s=48 * 3600)
    encoder = SensorEncoder(SensorEncoderConfig(channels=len(channels), out_dim=16, hidden=8))
    tokens = encoder.eval()(encoder.collate([stay]))
    assert tokens.values.shape == (1, 48, 16)
    assert tokens.names[0][0] == "t=0-3600s" and tokens.names[0][-1] == "t=169200-172800s"
    assert torch.isfinite(tokens.values).all()
    hourly_seen = stay.observed.reshape(48, 60, len(channels)).any(axis=(1, 2))
    assert tokens.mask[0].tolist() == hourly_seen.tolist()
