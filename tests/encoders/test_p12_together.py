"""PhysioNet 2012 files parsed together give, file by file, exactly what reading each alone gives:
the same grids bit for bit, the same skipped-line counts and the same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.readers import ReaderError, read_sensor
from encoders.readers.sensor_files import read_p12_together
from tests.conftest import shared_file

CHANNELS = ("HR", "Temp", "Urine", "Lactate", "GCS", "MAP", "Weight", "pH")
SETTINGS = {"channels": CHANNELS, "rate_hz": 1 / 60, "duration_s": 48 * 3600.0, "summed": ("Urine",)}

# Each a whole file's text after the header: skipped lines of every kind, blank lines, non-ASCII
# digits, CRLF endings, and files that end up unreadable in each way.
ODD_BODIES = {
    "mixed.txt": "00:00,HR,70\n\n10:45,,1.9\nxx,HR,1\n00:07,HR,inf\n00:09,HR,٣٤\n٠١:٠٠,Temp,37\n 01:02 , MAP , 80 \n",
    "crlf.txt": "00:00,HR,70\r\n00:30,HR,1_0\r\n00:31,Urine,20\r\n00:32,Urine,30\r\n",
    "extra-fields.txt": '00:00,HR,70,1\n00:05,HR,71\n"00:06",HR,72\n',
    "unknown-values.txt": "00:00,Weight,-1\n00:00,pH,7.3\n48:00,HR,60\n",
    "no-usable-line.txt": "10:45,,1.9\n10:50,,SECRET\nxx,HR,1\n",
    "no-channel.txt": "00:00,Age,54\n00:10,RespRate,20\n",
    "only-blank.txt": "\n  \n",
}


def _outcome(value):
    """What to compare: the grid's arrays and fields, or the error's message."""
    if isinstance(value, ReaderError):
        return ("error", str(value))
    return (
        value.values.dtype,
        value.values.tobytes(),
        value.observed.tobytes(),
        value.channels,
        value.rate_hz,
        value.start_s,
        list(value.skipped.items()),
        None if value.observed_cells is None else value.observed_cells.tobytes(),
    )


def _alone(path: Path):
    try:
        return read_sensor(path, **SETTINGS)
    except ReaderError as error:
        return error


def _files(tmp_path: Path) -> list[Path]:
    written = []
    for name, body in ODD_BODIES.items():
        path = tmp_path / name
        path.write_bytes(("Time,Parameter,Value\n" + body).encode())
        written.append(path)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "no-header.txt").write_bytes(b"00:00,HR,70\n")
    (tmp_path / "latin1.txt").write_bytes("Time,Parameter,Value\n00:00,Temp,37\u00b0\n".encode("latin-1"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfTime, Parameter, Value\n00:00,HR,70\n")
    return [*written, *(tmp_path / n for n in ("empty.txt", "no-header.txt", "latin1.txt", "bom.txt"))]


def test_odd_and_broken_files_parsed_together_match_each_read_alone(tmp_path):
    files = _files(tmp_path)
    together = read_p12_together([(path, path.read_bytes()) for path in files], **SETTINGS)
    assert len(together) == len(files)
    for path, value in zip(files, together, strict=True):
        assert _outcome(value) == _outcome(_alone(path)), path.name
    errors = {
        path.name for path, value in zip(files, together, strict=True) if isinstance(value, ReaderError)
    }
    assert errors == {
        "no-usable-line.txt",
        "no-channel.txt",
        "only-blank.txt",
        "empty.txt",
        "no-header.txt",
        "latin1.txt",
    }


def test_a_file_over_the_size_limit_fails_alone_with_the_same_message(tmp_path):
    files = _files(tmp_path)[:3]
    limit = min(len(path.read_bytes()) for path in files) + 1
    together = read_p12_together([(path, path.read_bytes()) for path in files], **SETTINGS, max_bytes=limit)
    for path, value in zip(files, together, strict=True):
        try:
            expected = read_sensor(path, **SETTINGS, max_bytes=limit)
        except ReaderError as error:
            expected = error
        assert _outcome(value) == _outcome(expected)
    assert sum(isinstance(value, ReaderError) for value in together) == 2


def test_no_files_give_no_grids():
    assert read_p12_together([], **SETTINGS) == []


@pytest.mark.realdata
def test_real_stays_parsed_together_match_each_read_alone():
    folder = shared_file("physionet2012", "set-a")
    files = sorted(folder.glob("*.txt"))[:: max(1, len(list(folder.glob("*.txt"))) // 97)]
    together = read_p12_together([(path, path.read_bytes()) for path in files], **SETTINGS)
    for path, value in zip(files, together, strict=True):
        assert _outcome(value) == _outcome(_alone(path)), path.name
    assert np.mean([isinstance(value, ReaderError) for value in together]) < 0.05
