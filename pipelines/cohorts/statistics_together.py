"""The series statistics of a batch's PhysioNet 2012 files, decoded together before its rows are read.

Read row by row, each file pays the fixed cost of every Arrow kernel call of the parser. Before a
batch's rows are read, the files among them whose statistics the decoded cache does not hold yet
are parsed together (:func:`~encoders.readers.sensor_files.read_p12_together`), and their
statistics are put in the cache under the sha256 of the very bytes that were parsed. The rows are
then read as always: each hashes its file and looks its content up. A file changed in between has
another hash and is decoded again on its own, so a row never gets the values of bytes other than
those it hashed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_schemas.cohort_spec import SensorModality
from encoders.readers.sensor_files import SensorArray, read_p12_together
from pipelines.cohorts.dataset import grid_statistics_together, statistics_how
from pipelines.cohorts.decoded_cache import file_bytes_and_sha256, process_cache

P12_SUFFIX = ".txt"
MAX_FILE_BYTES = 1_000_000
"""Larger files are left to the rows' own reads (a 48-hour PhysioNet 2012 stay is about 30 KB)."""
MAX_BATCH_BYTES = 16_000_000
"""Once a batch holds this many bytes of files to decode, its other files are read alone."""


def decode_statistics_together(
    paths: Sequence[str], modality: SensorModality, stats: Mapping[str, Any]
) -> int:
    """Put the statistics of the PhysioNet 2012 files among ``paths`` that the cache lacks into it.

    Files of other formats, files that cannot be read or parsed, and everything when the cache is
    off are left to the rows' own reads (which raise their errors).

    Args:
        paths: the sensor files of a batch's rows (repeats allowed).
        modality: their sensor modality.
        stats: its training statistics (``tokens == "variables"``).

    Returns:
        How many files were decoded and put in the cache.
    """
    cache = process_cache()
    if cache is None:
        return 0
    how = statistics_how(modality, stats)
    todo: list[tuple[Path, bytes, str]] = []
    held = 0
    for path in dict.fromkeys(p for p in paths if p.lower().endswith(P12_SUFFIX)):
        try:
            if os.stat(path).st_size > MAX_FILE_BYTES or held > MAX_BATCH_BYTES:
                continue  # read alone, so that a batch never holds many large files at once
            data, digest = file_bytes_and_sha256(path)
        except OSError:
            continue
        if not cache.holds(how, digest):
            todo.append((Path(path), data, digest))
            held += len(data)
    if not todo:
        return 0
    try:
        arrays = read_p12_together(
            [(path, data) for path, data, _ in todo],
            channels=modality.channels,
            rate_hz=modality.rate_hz,
            duration_s=modality.duration_s,
            summed=modality.summed_channels,
            max_bytes=round(modality.max_file_mb * 1_000_000),
        )
        grids = [
            (digest, array)
            for (_, _, digest), array in zip(todo, arrays, strict=True)
            if isinstance(array, SensorArray)
        ]
        statistics = grid_statistics_together([array for _, array in grids], stats)
    except Exception:
        # Decoding ahead is a shortcut only: an exotic file that trips it must not fail the batch.
        # Each row then reads its own file, which fails that row's modality with a reason.
        return 0
    for (digest, _), value in zip(grids, statistics, strict=True):
        cache.put(how, digest, value)
    return len(grids)
