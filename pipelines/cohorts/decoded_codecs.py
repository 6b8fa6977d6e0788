"""How each kind of decoded value is stored in the decoded cache: arrays plus text metadata.

A codec turns a value into named numpy arrays and string metadata (what safetensors holds) and
back, exactly: a value read from the cache is bit-identical to the one decoded from the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.readers.sensor_files import SensorArray
from encoders.series_statistics import SeriesObservations, SeriesStatistics

Arrays = dict[str, np.ndarray]
Metadata = dict[str, str]


@dataclass(frozen=True)
class Codec:
    """A value's round trip through arrays and metadata."""

    encode: Callable[[Any], tuple[Arrays, Metadata]]
    decode: Callable[[Arrays, Metadata], Any]


def _encode_sensor(array: SensorArray) -> tuple[Arrays, Metadata]:
    """Sparse when fewer than half the cells are observed (irregular vitals), else dense (ECG)."""
    steps, channels = array.observed.shape
    metadata = {
        "shape": json.dumps([steps, channels]),
        "channels": json.dumps(list(array.channels)),
        "rate_hz": repr(float(array.rate_hz)),
        "start_s": repr(float(array.start_s)),
        "skipped": json.dumps(dict(array.skipped)),
    }
    if array.observed.size and array.observed.mean() >= 0.5:
        return {
            "values": np.ascontiguousarray(array.values),
            "observed": np.ascontiguousarray(array.observed),
        }, metadata
    where = array.cells().astype(np.int64)
    return {"cells": where, "observed_values": array.values.reshape(-1)[where]}, metadata


def _decode_sensor(arrays: Arrays, metadata: Metadata) -> SensorArray:
    steps, channels = json.loads(metadata["shape"])
    cells = None
    if "values" in arrays:
        values, observed = arrays["values"], arrays["observed"]
    else:
        cells = arrays["cells"]
        values = np.zeros(steps * channels, dtype=np.float32)
        observed = np.zeros(steps * channels, dtype=bool)
        values[arrays["cells"]] = arrays["observed_values"]
        observed[arrays["cells"]] = True
        values, observed = values.reshape(steps, channels), observed.reshape(steps, channels)
    return SensorArray(
        values,
        observed,
        tuple(json.loads(metadata["channels"])),
        float(metadata["rate_hz"]),
        float(metadata["start_s"]),
        skipped=json.loads(metadata["skipped"]),
        observed_cells=cells,
    )


def _encode_statistics(statistics: SeriesStatistics) -> tuple[Arrays, Metadata]:
    arrays = {
        "values": np.ascontiguousarray(statistics.values),
        "observed": np.ascontiguousarray(statistics.observed),
    }
    kept = statistics.observations
    if kept is not None:
        arrays |= {
            "hours_before_end": np.ascontiguousarray(kept.hours_before_end),
            "channel": np.ascontiguousarray(kept.channel),
            "value": np.ascontiguousarray(kept.value),
        }
    return arrays, {"skipped": json.dumps(dict(statistics.skipped))}


def _decode_statistics(arrays: Arrays, metadata: Metadata) -> SeriesStatistics:
    kept = (
        SeriesObservations(arrays["hours_before_end"], arrays["channel"], arrays["value"])
        if "channel" in arrays
        else None
    )
    return SeriesStatistics(arrays["values"], arrays["observed"], json.loads(metadata["skipped"]), kept)


def _encode_array(value: np.ndarray) -> tuple[Arrays, Metadata]:
    return {"array": np.ascontiguousarray(value)}, {}


def _encode_text(value: str) -> tuple[Arrays, Metadata]:
    return {"utf8": np.frombuffer(value.encode("utf-8", "surrogatepass"), dtype=np.uint8)}, {}


CODECS: dict[str, Codec] = {
    "sensor": Codec(_encode_sensor, _decode_sensor),
    "series statistics": Codec(_encode_statistics, _decode_statistics),
    "array": Codec(_encode_array, lambda arrays, _: arrays["array"]),
    "text": Codec(_encode_text, lambda arrays, _: arrays["utf8"].tobytes().decode("utf-8", "surrogatepass")),
}

_STORABLE = (np.bool_, np.integer, np.floating)


def codec_for(value: Any) -> str | None:
    """The name of the codec that stores ``value``, or None when none does."""
    if isinstance(value, SensorArray):
        return "sensor"
    if isinstance(value, SeriesStatistics):
        return "series statistics"
    if (
        isinstance(value, np.ndarray)
        and value.dtype.kind in "biuf"
        and issubclass(value.dtype.type, _STORABLE)
    ):
        return "array"
    if isinstance(value, str):
        return "text"
    return None
