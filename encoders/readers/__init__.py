"""Readers: a file (or a cell) in, an array out.

They run in DataLoader workers, so they are plain functions of their arguments with no torch state,
and they raise :class:`ReaderError` with the file and the reason for anything they cannot read.
The format libraries (pydicom, nibabel, soundfile, wfdb, pandas) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from encoders.readers.errors import ReaderError
from encoders.readers.sniff import EXTENSIONS, sniff_file

_LAZY = {
    "read_image": "encoders.readers.image_files",
    "read_audio": "encoders.readers.audio_files",
    "read_sensor": "encoders.readers.sensor_files",
    "SensorArray": "encoders.readers.sensor_files",
    "read_text": "encoders.readers.text_files",
    "inline_text": "encoders.readers.text_files",
    "TextDocument": "encoders.readers.text_files",
    "TabularPreprocessor": "encoders.readers.tabular_files",
    "TabularArrays": "encoders.readers.tabular_files",
}

__all__ = ["EXTENSIONS", "ReaderError", "sniff_file", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
