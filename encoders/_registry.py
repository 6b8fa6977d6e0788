"""The encoder registry: ``register_encoder`` / ``create_encoder`` / ``list_encoders``."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from encoders.base import ModalityEncoder

_ENCODERS: dict[str, Callable[..., ModalityEncoder]] = {}
_BUILTIN_MODULES = (
    "encoders.tabular",
    "encoders.text",
    "encoders.image",
    "encoders.audio",
    "encoders.sensor",
)


def _load_builtins() -> None:
    """Import the built-in encoder modules (they register themselves); heavy, so done on first use."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register_encoder(
    name: str,
) -> Callable[[Callable[..., ModalityEncoder]], Callable[..., ModalityEncoder]]:
    """Register an encoder factory under ``name`` (a modality kind, or a variant such as ``image-tiny``)."""

    def add(factory: Callable[..., ModalityEncoder]) -> Callable[..., ModalityEncoder]:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered by {_ENCODERS[name].__module__}")
        _ENCODERS[name] = factory
        return factory

    return add


def create_encoder(name: str, **config: Any) -> ModalityEncoder:
    """Build the encoder registered as ``name`` with keyword ``config``."""
    _load_builtins()
    if name not in _ENCODERS:
        close = difflib.get_close_matches(name, list(_ENCODERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown encoder {name!r}{hint} Available: {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[name](**config)


def list_encoders() -> list[str]:
    """Names of every registered encoder, sorted."""
    _load_builtins()
    return sorted(_ENCODERS)
