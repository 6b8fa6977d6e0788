"""Readers: a file (or a cell) in, an array out. They run in DataLoader workers, so they are plain
functions of their arguments with no torch state, and they raise :class:`ReaderError` with the file
and the reason for anything they cannot read."""

from encoders.readers.errors import ReaderError
from encoders.readers.sniff import EXTENSIONS, sniff_file

__all__ = ["EXTENSIONS", "ReaderError", "sniff_file"]
