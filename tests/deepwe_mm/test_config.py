"""DeepWeConfig: validation, ablations and the JSON round trip that rebuilds an identical model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from deepwe_mm import ABLATIONS, DeepWe, DeepWeConfig
from tests.deepwe_mm import TINY, make_batch


def test_json_round_trip_rebuilds_an_identical_model() -> None:
    config = replace(TINY, class_weights=(1.0, 2.5, 0.5), gate="sparsemax")
    data = json.loads(json.dumps(config.to_dict()))
    rebuilt_config = DeepWeConfig.from_dict(data)
    assert rebuilt_config == config
    model, rebuilt = DeepWe(config).eval(), DeepWe(rebuilt_config).eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    batch = make_batch(config)
    assert torch.equal(model(*batch).logits, rebuilt(*batch).logits)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_dim": 37, "n_heads": 3}, "multiple of n_heads"),
        ({"gate": "softmax"}, "gate must be one of"),
        ({"n_classes": 1}, "n_classes"),
        ({"class_weights": (1.0, 2.0)}, "class_weights"),
        ({"modality_dims": {"labs": 0}}, "modality_dims['labs']"),
        ({"modality_dims": {}}, "at least one modality"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"contrastive_temperature": 0.0}, "contrastive_temperature"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match="invalid DeepWeConfig") as error:
        replace(TINY, **change)
    assert message in str(error.value)


def test_unknown_key_suggests_the_closest_one() -> None:
    data = TINY.to_dict() | {"hiden_dim": 8}
    with pytest.raises(ValueError, match="did you mean 'hidden_dim'"):
        DeepWeConfig.from_dict(data)


def test_config_keeps_its_own_copy_of_the_dims() -> None:
    dims = {"a": 3}
    config = DeepWeConfig(modality_dims=dims)
    dims["b"] = 4
    assert config.modalities == ("a",)


def test_every_ablation_turns_off_exactly_one_switch() -> None:
    base = replace(TINY, flat_readout=False)  # the defaults' readout, so that every switch flips
    for name, change in ABLATIONS.items():
        ablated = base.ablate(name)
        differing = {k for k, v in ablated.to_dict().items() if base.to_dict()[k] != v}
        assert differing == set(change), name
    with pytest.raises(ValueError, match="available"):
        TINY.ablate("no_everything")


def test_token_layers_per_modality_mix_only_the_modalities_named() -> None:
    model = DeepWe(replace(TINY, token_layers={"vitals": 2}))
    assert [len(list(mixer.parameters())) > 0 for mixer in model.mixers] == [False, False, True]
    assert DeepWe(replace(TINY, token_layers=0)).mixers is None
    assert DeepWeConfig.from_dict(replace(TINY, token_layers={"vitals": 1}).to_dict()).layers_of("notes") == 0
    with pytest.raises(ValueError, match=r"token_layers\['scans'\] must name a configured modality"):
        replace(TINY, token_layers={"scans": 2})
