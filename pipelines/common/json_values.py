"""JSON that every reader can parse: NaN and infinities (an AUROC on a one-class split) become null,
numpy values plain Python ones. Bundles, evaluations, explanations and benchmark results use it."""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np


def finite(value: Any) -> Any:
    """``value`` made JSON-ready: non-finite floats -> None, numpy scalars and arrays -> Python
    numbers and lists, tuples -> lists, paths -> text, mapping keys -> text (order kept: the order of
    the modalities is the order of the model's modality axis)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [finite(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def json_text(payload: Any, *, indent: int | None = 2) -> str:
    """``payload`` as strict JSON text (see :func:`finite`), ending in a newline."""
    return json.dumps(finite(payload), indent=indent, allow_nan=False) + "\n"
