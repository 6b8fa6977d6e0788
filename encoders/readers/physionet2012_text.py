"""The PhysioNet 2012 long format, ``Time,Parameter,Value``, parsed in whole-file operations.

The lines go into one Arrow string array; splitting, trimming, the ``HH:MM`` check and number
parsing are Arrow compute kernels over the whole file, and the sample matrix is filled with one
numpy scatter. Only lines the vectorised checks refuse (malformed lines, a handful at most) are
looked at again one by one, so that exotic spellings Python accepts (``"1_000"``, non-ASCII
digits) are read exactly as a line-by-line reader reads them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoders.readers.errors import ReaderError
from encoders.readers.sensor_samples import Samples, no_channels, skip_note
from encoders.readers.tabular_files import FLOAT32_MAX

P12_HEADER = "Time,Parameter,Value"
P12_UNKNOWN = -1.0
SKIP_P12_FIELDS = "line without 3 fields and a parameter name"
SKIP_P12_TIME = "line whose time is not HH:MM"
SKIP_P12_VALUE = "line whose value is not a finite number"

_TIME = r"^(?P<hours>[0-9]+):(?P<minutes>[0-5][0-9])$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_PY_TIME = re.compile(r"(\d+):([0-5]\d)")


def p12_samples(path: Path, channels: Sequence[str]) -> Samples:
    """Samples from ``Time,Parameter,Value`` lines; ``-1`` is an unknown value.

    A malformed line is skipped and counted per reason in ``Samples.skipped`` (in the order the
    reasons first occur in the file); blank lines are ignored.

    Raises:
        ReaderError: not UTF-8, no header, no usable line, or none of ``channels`` in the file.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ReaderError(path, "expected a UTF-8 PhysioNet 2012 text file") from None
    (samples,) = _samples_of_bodies([(path, _body(path, text))], channels)
    if isinstance(samples, ReaderError):
        raise samples
    return samples


def p12_samples_together(
    files: Sequence[tuple[Path, bytes]], channels: Sequence[str]
) -> list[Samples | ReaderError]:
    """:func:`p12_samples` of many files at once, from their bytes: the lines of all files go
    through the Arrow kernels together, so the cost per call is paid once, not once per file.

    Returns:
        Per file, in order, its samples or the :class:`ReaderError` :func:`p12_samples` raises.
    """
    found: list[Samples | ReaderError | None] = [None] * len(files)
    bodies, where = [], []
    for n, (path, data) in enumerate(files):
        try:
            # Universal newlines (read_text) and splitlines break the same lines.
            bodies.append((path, _body(path, data.decode("utf-8-sig"))))
            where.append(n)
        except UnicodeDecodeError:
            found[n] = ReaderError(path, "expected a UTF-8 PhysioNet 2012 text file")
        except ReaderError as error:
            found[n] = error
    for n, samples in zip(where, _samples_of_bodies(bodies, channels), strict=True):
        found[n] = samples
    return [f for f in found if f is not None]


def _body(path: Path, text: str) -> list[str]:
    """The lines after the header.

    Raises:
        ReaderError: the file is empty or its first line is not the header.
    """
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ReaderError(path, f"expected a first line {P12_HEADER!r}, but the file is empty")
    if lines[0].replace(" ", "") != P12_HEADER:
        raise ReaderError(path, f"expected a first line {P12_HEADER!r} (PhysioNet 2012 format)")
    return lines[1:]


def _samples_of_bodies(
    bodies: Sequence[tuple[Path, list[str]]], channels: Sequence[str]
) -> list[Samples | ReaderError]:
    """Samples of each file's body lines (see :func:`p12_samples`), every check made on the lines of
    all files at once: each line is read on its own, so the files only part at the end."""
    lines = pa.array([line for _, body in bodies for line in body], type=pa.large_string())
    owner = np.repeat(np.arange(len(bodies)), [len(body) for _, body in bodies])
    kept = pc.not_equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)
    body, owner = lines.filter(kept), owner[kept]
    parts = pc.split_pattern(body, ",")
    three = pc.equal(pc.list_value_length(parts), 3).to_numpy(zero_copy_only=False)
    fields = pc.utf8_trim_whitespace(pc.list_flatten(parts.filter(three)))
    n = len(fields) // 3
    clock, parameter, text_value = (fields.take(np.arange(k, 3 * n, 3)) for k in range(3))
    named = pc.not_equal(parameter, "").to_numpy(zero_copy_only=False)
    seconds = _seconds(clock)
    value = _numbers(text_value)
    timed = ~np.isnan(seconds)
    finite = np.abs(value) <= FLOAT32_MAX  # False for NaN, infinite, or too large for float32
    reason = np.zeros(len(body), dtype=np.int8)  # index into _REASONS, 0 for a usable line
    line = np.flatnonzero(three)
    reason[~three] = 1
    reason[line[~named]] = 1
    reason[line[named & ~timed]] = 2
    reason[line[named & timed & ~finite]] = 3
    usable = named & timed & finite
    parameter, seconds, value = parameter.filter(usable), seconds[usable], value[usable]
    column = pc.index_in(parameter, value_set=pa.array(list(channels), type=pa.large_string()))
    column = column.to_numpy(zero_copy_only=False)  # float with NaN for other parameters
    file_of_line, file_of_sample = np.arange(len(bodies) + 1), owner[line[usable]]
    line_bounds = np.searchsorted(owner, file_of_line)
    sample_bounds = np.searchsorted(file_of_sample, file_of_line)
    found: list[Samples | ReaderError] = []
    for f, (path, _) in enumerate(bodies):
        skipped = _first_seen_counts(reason[line_bounds[f] : line_bounds[f + 1]])
        start, stop = sample_bounds[f], sample_bounds[f + 1]
        if start == stop:
            found.append(
                ReaderError(
                    path,
                    f"expected at least one 'HH:MM,Parameter,Value' line after the header{skip_note(skipped)}",
                )
            )
            continue
        own = column[start:stop]
        if np.isnan(own).all():
            has = pc.unique(parameter.slice(start, stop - start)).to_pylist()
            found.append(no_channels(path, channels, has, "parameters"))
            continue
        own_value = value[start:stop]
        hit = ~np.isnan(own) & (own_value != P12_UNKNOWN)
        values = np.full((len(own_value), len(channels)), np.nan)
        values[np.flatnonzero(hit), own[hit].astype(np.int64)] = own_value[hit]
        found.append(Samples(seconds[start:stop], values, skipped))
    return found


def _seconds(clock: pa.Array) -> np.ndarray:
    """``HH:MM`` texts as seconds, NaN where the text is not ``HH:MM``."""
    parts = pc.extract_regex(clock, _TIME)
    matched = parts.is_valid().to_numpy(zero_copy_only=False)
    seconds = np.full(len(clock), np.nan)
    if matched.any():
        parts = parts.filter(matched)
        hours = pc.cast(pc.struct_field(parts, "hours"), pa.float64()).to_numpy()
        minutes = pc.cast(pc.struct_field(parts, "minutes"), pa.float64()).to_numpy()
        seconds[matched] = (hours * 60.0 + minutes) * 60.0
    for i in np.flatnonzero(~matched):  # only lines the ASCII pattern refused: non-ASCII digits
        found = _PY_TIME.fullmatch(clock[int(i)].as_py())
        if found is not None:
            seconds[i] = (int(found[1]) * 60 + int(found[2])) * 60.0
    return seconds


def _numbers(texts: pa.Array) -> np.ndarray:
    """Texts as float64, NaN where Python's ``float`` would refuse them."""
    plain = pc.match_substring_regex(texts, _NUMBER).to_numpy(zero_copy_only=False)
    numbers = np.full(len(texts), np.nan)
    if plain.any():
        numbers[plain] = pc.cast(texts.filter(plain), pa.float64()).to_numpy()
    for i in np.flatnonzero(~plain):  # only texts the plain pattern refused: "inf", "1_0", "abc"
        try:
            numbers[i] = float(texts[int(i)].as_py())
        except ValueError:
            numbers[i] = math.nan
    return numbers


_REASONS = ("", SKIP_P12_FIELDS, SKIP_P12_TIME, SKIP_P12_VALUE)


def _first_seen_counts(reason: np.ndarray) -> dict[str, int]:
    """Reason -> number of lines, in the order each reason first occurs in the file.

    Args:
        reason: ``(L,)`` int8 index into ``_REASONS`` per line; 0 for a usable line.
    """
    if not reason.any():
        return {}
    codes, first, counts = np.unique(reason, return_index=True, return_counts=True)
    return {_REASONS[codes[i]]: int(counts[i]) for i in np.argsort(first) if codes[i]}
