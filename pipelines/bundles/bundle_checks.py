"""Checks on a bundle's files that run before anything is built from them.

A bundle's manifest proves only that its files are the ones it lists: anyone who can write the
folder can change ``config.json`` and re-hash it. So before a model is built, every size in the
config is bounded by the tensors the weights file actually holds, read from the safetensors header
alone (a few KB; no tensor is loaded), and a malformed header is refused in one line.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100_000_000
SIZE_FLOOR = 4096
"""Sizes up to this are always accepted (small models have small tensors but may name, say, an
FFT length larger than any of them)."""
NOT_SIZES = frozenset({"sample_rate", "seed"})
"""Config keys whose integers are not tensor sizes (an audio sample rate is often 16000 or more)."""
_ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class HeaderError(ValueError):
    """A safetensors file whose header is not valid; the message is one line naming the file."""


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header of the safetensors file at ``path`` (no data read).

    Raises:
        HeaderError: the header length, JSON, a dtype, a shape or a data range is not valid.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise HeaderError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", start)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise HeaderError(
                f"{path}: not a valid safetensors file (its header claims {length} bytes; the file "
                f"has {size})"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise HeaderError(f"{path}: not a valid safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{path}: not a valid safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shapes[name] = _shape(path, name, entry, data_bytes)
    return shapes


def _shape(path: Path, name: str, entry: object, data_bytes: int) -> tuple[int, ...]:
    """The checked shape of one header entry."""
    bad = f"{path}: not a valid safetensors file (tensor {name[:80]!r}: "
    if not isinstance(entry, dict) or entry.get("dtype") not in _ITEM_BYTES:
        raise HeaderError(bad + "expected a known dtype, a shape and data_offsets)")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise HeaderError(bad + "expected a shape of non-negative integers)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise HeaderError(bad + "expected data_offsets [begin, end])")
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise HeaderError(bad + f"its data range {begin}..{end} is outside the {data_bytes} data bytes)")
    if math.prod(shape) * _ITEM_BYTES[entry["dtype"]] != end - begin:
        raise HeaderError(bad + "its shape does not match its data range)")
    return tuple(shape)


def check_config_sizes(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Refuse a config naming a size larger than every tensor dimension the bundle holds.

    Args:
        config: the parts of ``config.json`` a model is built from.
        shapes: tensor name -> shape of the bundle's safetensors files.
        where: the config file, for the message.

    Raises:
        ValueError: one line naming the key, its value and the bound.
    """
    bound = max([SIZE_FLOOR, *(d for shape in shapes.values() for d in shape)])
    for key_path, value in _integers(config, ""):
        if value > bound or value < 0:
            raise ValueError(
                f"{where}: {key_path} = {value} is not a size this bundle's weights can hold (at most "
                f"{bound}, the largest tensor dimension); config.json and the weights do not match"
            )


def _integers(node: object, prefix: str) -> Iterator[tuple[str, int]]:
    """(dotted key, value) of every integer in a JSON tree, skipping :data:`NOT_SIZES` keys."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key not in NOT_SIZES:
                yield from _integers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _integers(value, f"{prefix}[{i}]")
    elif isinstance(node, int) and not isinstance(node, bool):
        yield prefix, node
