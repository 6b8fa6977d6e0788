"""Clinical notes: a UTF-8 text file, or the text of a table cell, in; a string out.

Bytes that are not UTF-8 (a Latin-1 export, a truncated multi-byte character) are replaced by
U+FFFD one byte at a time and counted, never a crash: a note with a few odd bytes is still a note,
and the count lets validation report how damaged it was. Chunking long notes is the encoder's job.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from encoders.readers.errors import ReaderError

INLINE_SOURCE = "<inline text cell>"
# surrogateescape turns each undecodable byte into one lone surrogate in this range.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# A str can also carry lone surrogates of its own (from a bad upstream decode); none may survive.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TextDocument:
    """A decoded note.

    Attributes:
        text: the note, newlines normalised to ``\\n``, without a byte order mark.
        replaced_bytes: how many undecodable bytes (or lone surrogates) became U+FFFD.
    """

    text: str
    replaced_bytes: int


def read_text(path: str | Path, *, max_bytes: int = 5_000_000) -> TextDocument:
    """Read a UTF-8 note from ``path``.

    Raises:
        ReaderError: the file is absent, larger than ``max_bytes``, or empty or blank.
    """
    path = Path(path)
    if not path.is_file():
        raise ReaderError(path, "expected a text file, but there is no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ReaderError(path, f"expected at most {max_bytes} bytes of text, the file has {size}")
    with path.open("rb") as handle:
        # Read one byte past the limit: the file may have grown since stat.
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ReaderError(path, f"expected at most {max_bytes} bytes of text, the file has more")
    raw = raw.removeprefix(codecs.BOM_UTF8)
    decoded = raw.decode("utf-8", errors="surrogateescape")
    text, replaced = _ESCAPED_BYTE.subn("\ufffd", decoded)
    return _document(path, text, replaced)


def inline_text(cell: str, *, max_bytes: int = 5_000_000) -> TextDocument:
    """The note held in a table cell (``inline: true`` in the cohort spec).

    Raises:
        TypeError: ``cell`` is not a string.
        ReaderError: the cell is blank or longer than ``max_bytes`` UTF-8 bytes.
    """
    if not isinstance(cell, str):
        raise TypeError(f"an inline text cell must be a str, got {type(cell).__name__}")
    text, replaced = _LONE_SURROGATE.subn("\ufffd", cell.removeprefix("\ufeff"))
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise ReaderError(INLINE_SOURCE, f"expected at most {max_bytes} bytes of text, got {size}")
    return _document(INLINE_SOURCE, text, replaced)


def _document(source: str | Path, text: str, replaced: int) -> TextDocument:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ReaderError(source, "expected a note with text, but it is empty or only whitespace")
    return TextDocument(text, replaced)
