"""Property tests: random bytes and random edits of real files never crash a reader with anything
but its own error, and never take more than a couple of seconds per file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.readers.errors import ReaderError
from encoders.readers.sensor_files import SensorArray, read_sensor
from pipelines.cohorts.cohort_table import read_table
from pipelines.cohorts.spec_io import read_spec
from tests.conftest import SHARED_DATA

FAST = settings(
    max_examples=40,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
P12_RECORD = SHARED_DATA / "physionet2012" / "set-a" / "132539.txt"
SENSOR_CSV = b"time,HR,SpO2\n0,60,97\n1,61,\n2.5,62,98\n3,,99\n"
COHORT_CSV = b"patient_id,died,age,note_path\nP1,0,54,notes/a.txt\nP2,1,,\nP3,,71,notes/c.txt\n"
SPEC = b"""name: t
table: cohort.csv
id: patient_id
outcome: {column: died}
modalities:
  labs: {kind: tabular, numeric: [age]}
  notes: {kind: text, column: note_path}
"""


@st.composite
def edited(draw, original: bytes) -> bytes:
    """``original`` with up to eight random byte insertions, deletions, replacements or line copies."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "copy line"]))
        byte = draw(
            st.sampled_from([b",", b"\n", b":", b"-", b"e", b"9", b"\x00", b"\xff", b" ", b";", b'"'])
        )
        if action == "insert":
            data[where:where] = byte
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 20))]
        elif action == "replace" and where < len(data):
            data[where : where + 1] = byte
        else:
            line = bytes(data[where:]).split(b"\n", 1)[0]
            data[where:where] = line + b"\n"
    return bytes(data)


def _contents(original: bytes):
    return st.one_of(st.binary(max_size=400), edited(original))


def _read(path: Path, **kwargs):
    try:
        return read_sensor(path, **kwargs)
    except ReaderError as error:
        assert "\n" not in str(error)
        return error


@FAST
@given(data=_contents(SENSOR_CSV))
def test_sensor_csv_reader_answers_with_an_array_or_its_own_error(tmp_path, data):
    path = tmp_path / "v.csv"
    path.write_bytes(data)
    result = _read(path, channels=["HR", "SpO2"], rate_hz=1.0, max_samples=10_000)
    if isinstance(result, SensorArray):
        assert result.values.shape == result.observed.shape
        assert all(count > 0 for count in result.skipped.values())


@FAST
@given(data=st.data())
def test_p12_reader_answers_with_an_array_or_its_own_error(tmp_path, data):
    original = P12_RECORD.read_bytes() if P12_RECORD.is_file() else b"Time,Parameter,Value\n00:00,HR,70\n"
    path = tmp_path / "p12.txt"
    path.write_bytes(data.draw(_contents(original)))
    result = _read(path, channels=["HR", "Temp", "pH"], rate_hz=1 / 3600, duration_s=48 * 3600)
    if isinstance(result, SensorArray):
        assert result.values.shape == (48, 3)


@FAST
@given(data=_contents(COHORT_CSV))
def test_cohort_table_reader_answers_with_a_table_or_a_value_error(tmp_path, data):
    path = tmp_path / "cohort.csv"
    path.write_bytes(data)
    try:
        table = read_table(path)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert all(
        cell is None or not isinstance(cell, str) or cell == cell.strip() for cell in table.to_numpy().ravel()
    )


@FAST
@given(data=_contents(SPEC))
def test_spec_loader_answers_with_a_spec_or_problems(tmp_path, data):
    path = tmp_path / "cohort.yaml"
    path.write_bytes(data)
    spec, problems = read_spec(path)
    assert spec is not None or problems


@pytest.mark.realdata
@FAST
@given(data=st.data())
def test_real_cohort_table_edits_never_crash(tmp_path, data):
    source = SHARED_DATA / "physionet2012" / "Outcomes-a.txt"
    if not source.is_file():
        pytest.skip("PhysioNet 2012 outcomes are not in ../shared/data")
    path = tmp_path / "outcomes.csv"
    path.write_bytes(data.draw(edited(source.read_bytes()[:4000])))
    try:
        read_table(path)
    except ValueError as error:
        assert "\n" not in str(error)
