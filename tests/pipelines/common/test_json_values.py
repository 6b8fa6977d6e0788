"""The one NaN-safe JSON helper: strict JSON out of NaN, infinities and numpy values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipelines.common.json_values import finite, json_text


def test_non_finite_numbers_become_null_and_numpy_values_plain_python() -> None:
    payload = {
        "auroc": math.nan,
        "gain": -math.inf,
        "n": np.int64(3),
        "ok": np.bool_(True),
        "risk": np.float32(0.25),
        "curve": np.array([0.5, np.nan]),
        "pair": (1, np.inf),
        7: Path("runs/model"),
    }
    expected = {
        "auroc": None,
        "gain": None,
        "n": 3,
        "ok": True,
        "risk": 0.25,
        "curve": [0.5, None],
        "pair": [1, None],
        "7": "runs/model",
    }
    assert finite(payload) == expected
    assert [type(v) for v in finite(payload).values()][2:5] == [int, bool, float]
    assert json.loads(json_text(payload)) == expected
    assert json_text({"b": 1, "a": 2}, indent=None) == '{"b": 1, "a": 2}\n'  # key order kept
