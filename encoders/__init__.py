"""Modality readers (file -> array) and encoders (array -> tokens), one file per modality kind.

The public surface: the encoder registry (``register_encoder``, ``create_encoder``,
``list_encoders``), the surface every encoder has (``ModalityEncoder``) and what encoders exchange
(``EncoderBatch`` in, ``Tokens`` out: ``values (B, T, D)``, ``mask (B, T)``, token names). Readers
live in :mod:`encoders.readers`. Names load on first use: readers run in DataLoader workers and
``deepwe validate`` uses them without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "register_encoder": "encoders._registry",
    "create_encoder": "encoders._registry",
    "list_encoders": "encoders._registry",
    "ModalityEncoder": "encoders.base",
    "EncoderBatch": "encoders.tokens",
    "Tokens": "encoders.tokens",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
