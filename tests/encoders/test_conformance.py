"""Conformance suite: every registered encoder honours the same contract.

What a registered encoder must offer (the lead documents this in ``encoders/base.py``):

- It is registered as ``"<kind>"`` and as ``"<kind>-tiny"``, a fast variant with odd sizes for tests;
  ``encoder.kind == "<kind>"``.
- ``encoder.config`` is its frozen dataclass config; ``create_encoder(name, **fields)`` takes the
  config's fields. Fields without a default are data-dependent (variable names, channel count): this
  suite builds the real default with the tiny variant's values for them.
- ``encoder.out_dim`` (int) is the token width D.
- ``encoder.example_samples(n, rng)`` returns ``n`` reader-shaped samples (never None) that this
  encoder's config accepts, each with at least one observed token; ``rng`` is a
  ``numpy.random.Generator`` and the same generator state gives the same samples. It is called on
  the instance, so it may be a classmethod when the samples do not depend on the config.
- ``collate(samples)`` takes those samples with None for a missing patient and returns an
  :class:`~encoders.tokens.EncoderBatch`; ``forward(batch)`` returns :class:`~encoders.tokens.Tokens`.

Only the tiny variants run the forward checks; the real defaults are only built.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import numpy as np
import pytest
import torch

import encoders
from encoders import create_encoder, list_encoders
from encoders.base import ModalityEncoder
from encoders.tokens import EncoderBatch, Tokens


def _import_encoder_modules() -> None:
    """Import every module of the package so that each registers its encoders."""
    for module in pkgutil.iter_modules(encoders.__path__):
        if not module.ispkg and not module.name.startswith("_"):
            importlib.import_module(f"encoders.{module.name}")


_import_encoder_modules()
NAMES = list_encoders()
DEFAULTS = [name for name in NAMES if not name.endswith("-tiny")]
# Registered names, plus "name:mode" for an encoder that builds another token mode on request.
TOKEN_MODES = {
    "sensor-tiny:variables": ("sensor-tiny", {"tokens": "variables"}),
    "sensor-tiny:variables+trajectory": ("sensor-tiny", {"tokens": "variables", "trajectory": True}),
}
TINY = [name for name in NAMES if name.endswith("-tiny")] + list(TOKEN_MODES)


def _tiny(case: str) -> ModalityEncoder:
    name, config = TOKEN_MODES.get(case, (case, {}))
    return create_encoder(name, **config)


def _samples(encoder: ModalityEncoder, n: int, missing: tuple[int, ...] = ()) -> list[Any]:
    samples = encoder.example_samples(n, np.random.default_rng(7))
    assert len(samples) == n
    assert all(sample is not None for sample in samples), (
        "example_samples must not return None: the suite chooses which patients are missing"
    )
    return [None if row in missing else sample for row, sample in enumerate(samples)]


def _data_fields(name: str) -> dict[str, Any]:
    """The tiny variant's values for the config fields that have no default."""
    config = getattr(create_encoder(f"{name}-tiny"), "config", None)
    if not dataclasses.is_dataclass(config):
        return {}
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }


def test_the_registry_holds_the_four_array_kinds():
    assert {"tabular", "image", "audio", "sensor"} <= set(DEFAULTS)


@pytest.mark.parametrize("name", DEFAULTS)
def test_every_kind_has_a_tiny_variant(name):
    tiny_names = [n for n in NAMES if n.endswith("-tiny")]
    assert f"{name}-tiny" in tiny_names


@pytest.mark.parametrize("name", DEFAULTS)
def test_the_default_variant_builds(name):
    encoder = create_encoder(name, **_data_fields(name))
    assert isinstance(encoder, ModalityEncoder)
    assert encoder.kind == name
    assert isinstance(encoder.out_dim, int) and encoder.out_dim > 0
    assert any(parameter.requires_grad for parameter in encoder.parameters())


@pytest.mark.parametrize("name", TINY)
def test_tokens_have_the_contract_shapes(name):
    encoder = _tiny(name).eval()
    assert encoder.kind == name.split(":")[0].removesuffix("-tiny")
    batch = encoder.collate(_samples(encoder, 5, missing=(1, 3)))
    assert isinstance(batch, EncoderBatch)
    assert batch.present.dtype == torch.bool
    assert batch.present.tolist() == [True, False, True, False, True]

    with torch.no_grad():
        tokens = encoder(batch)

    assert isinstance(tokens, Tokens)
    n_tokens = tokens.values.shape[1]
    assert n_tokens >= 1
    assert tokens.values.shape == (5, n_tokens, encoder.out_dim)
    assert tokens.mask.dtype == torch.bool and tokens.mask.shape == (5, n_tokens)
    assert len(tokens.names) == 5
    assert all(len(names) == n_tokens for names in tokens.names)
    assert all(isinstance(name, str) for names in tokens.names for name in names)
    assert torch.isfinite(tokens.values).all()
    assert not tokens.mask[~batch.present].any(), "a missing patient has an observed token"
    assert tokens.mask[batch.present].any(dim=1).all(), "a present patient has no observed token"


@pytest.mark.parametrize("name", TINY)
def test_a_batch_with_every_patient_missing_is_finite_and_masked(name):
    encoder = _tiny(name).eval()
    batch = encoder.collate([None, None, None])
    with torch.no_grad():
        tokens = encoder(batch)
    assert batch.present.tolist() == [False, False, False]
    assert tokens.values.shape[0] == 3 and tokens.values.shape[2] == encoder.out_dim
    assert all(len(names) == tokens.values.shape[1] for names in tokens.names)
    assert torch.isfinite(tokens.values).all()
    assert not tokens.mask.any()


@pytest.mark.parametrize("name", TINY)
def test_a_gradient_reaches_every_trainable_parameter(name):
    encoder = _tiny(name).train()
    batch = encoder.collate(_samples(encoder, 4, missing=(2,)))
    # A random read-out: a plain sum would see no gradient through a final LayerNorm.
    readout = torch.randn(encoder.out_dim)
    trainable = {key: value for key, value in encoder.named_parameters() if value.requires_grad}
    reached: set[str] = set()
    # Two steps: zero-initialised residual branches (timm's zero_init_last) pass no gradient to
    # their inner layers until one step has moved them; a disconnected parameter never gets one.
    for _ in range(2):
        encoder.zero_grad()
        tokens = encoder(batch)
        (tokens.values[tokens.mask] @ readout).square().sum().backward()
        with torch.no_grad():
            for key, parameter in trainable.items():
                if parameter.grad is not None and parameter.grad.any():
                    reached.add(key)
                    parameter -= 0.1 * parameter.grad / (parameter.grad.norm() + 1e-12)

    dead = sorted(set(trainable) - reached)
    assert not dead, f"no gradient from the observed tokens reaches {dead}"


@pytest.mark.parametrize("name", TINY)
def test_a_patients_tokens_do_not_depend_on_the_batch(name):
    encoder = _tiny(name).eval()
    samples = _samples(encoder, 5, missing=(2,))
    with torch.no_grad():
        together = encoder(encoder.collate(samples))
        for row, sample in enumerate(samples):
            if sample is None:
                continue
            alone = encoder(encoder.collate([sample]))
            n_tokens = alone.values.shape[1]
            assert n_tokens <= together.values.shape[1]
            assert alone.names[0] == together.names[row][:n_tokens]
            assert torch.equal(alone.mask[0], together.mask[row, :n_tokens])
            assert not together.mask[row, n_tokens:].any(), "batch padding is marked observed"
            observed = alone.mask[0]
            torch.testing.assert_close(
                alone.values[0, observed],
                together.values[row, :n_tokens][observed],
                atol=1e-5,
                rtol=1e-4,
            )


@pytest.mark.parametrize("name", TINY)
def test_example_samples_are_reproducible(name):
    encoder = _tiny(name)
    first = encoder.collate(encoder.example_samples(3, np.random.default_rng(11)))
    second = encoder.collate(encoder.example_samples(3, np.random.default_rng(11)))
    assert first.tensors.keys() == second.tensors.keys()
    for key, value in first.tensors.items():
        assert torch.equal(value, second.tensors[key]), key
    assert first.names == second.names
