"""The sensor reader: real PhysioNet files, grids built by hand, and files broken on purpose."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoders.readers.errors import ReaderError
from encoders.readers.sensor_files import read_sensor
from tests.conftest import shared_file

HOUR = 3600.0
P12_RECORDS = ("132539", "132540", "132541")


def _hand_parse_p12(path: Path, parameter: str) -> dict[int, list[float]]:
    """Hour since admission -> known values of ``parameter``, read line by line."""
    by_hour: dict[int, list[float]] = {}
    for line in path.read_text().splitlines()[1:]:
        clock, name, value = line.split(",")
        hours, minutes = clock.split(":")
        if name == parameter and float(value) != -1:
            hour = (int(hours) * 60 + int(minutes)) // 60
            by_hour.setdefault(hour, []).append(float(value))
    return by_hour


# --- real files ----------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("record", P12_RECORDS)
def test_physionet2012_hourly_grid_matches_a_hand_parse(record):
    path = shared_file("physionet2012", "set-a", f"{record}.txt")
    array = read_sensor(path, channels=["HR", "Temp", "NotAVariable"], rate_hz=1 / HOUR, duration_s=48 * HOUR)
    assert array.values.shape == array.observed.shape == (48, 3)
    assert array.values.dtype == np.float32 and array.observed.dtype == bool
    assert array.start_s == 0.0
    for c, parameter in enumerate(("HR", "Temp")):
        by_hour = _hand_parse_p12(path, parameter)
        assert array.observed[:, c].sum() == len([h for h in by_hour if h < 48])
        for hour, values in by_hour.items():
            if hour < 48:
                assert array.values[hour, c] == pytest.approx(np.mean(values), rel=1e-6)
        unseen = ~array.observed[:, c]
        assert np.all(array.values[unseen, c] == 0.0)
    assert not array.observed[:, 2].any()


@pytest.mark.realdata
def test_physionet2012_minus_one_is_unobserved_and_static_values_sit_in_cell_zero():
    path = shared_file("physionet2012", "set-a", "132539.txt")
    lines = path.read_text().splitlines()
    unknown = {line.split(",")[1] for line in lines[1:] if line.split(",")[2] == "-1"}
    assert unknown, "this record is expected to have an unknown (-1) static value"
    name = sorted(unknown)[0]
    age = next(float(line.split(",")[2]) for line in lines if line.split(",")[1] == "Age")
    array = read_sensor(path, channels=["Age", name], rate_hz=1 / HOUR)
    assert array.observed[0, 0] and array.values[0, 0] == age
    assert array.observed[:, 0].sum() == 1
    if name not in {line.split(",")[1] for line in lines[1:] if line.split(",")[2] != "-1"}:
        assert not array.observed[:, 1].any()


@pytest.mark.realdata
def test_mitbih_100_two_leads_at_native_and_lower_rate():
    import wfdb

    path = shared_file("wfdb_samples", "100.hea")
    native = read_sensor(path, channels=["MLII", "V5"], rate_hz=360, duration_s=2.0)
    truth = wfdb.rdrecord(str(path.with_suffix("")), sampto=720).p_signal
    assert native.values.shape == (720, 2) and native.observed.all()
    np.testing.assert_allclose(native.values, truth, rtol=1e-6)
    tenth = read_sensor(path, channels=["MLII", "V5"], rate_hz=36, duration_s=2.0)
    assert tenth.values.shape == (72, 2) and tenth.observed.all()
    np.testing.assert_allclose(tenth.values, truth.reshape(72, 10, 2).mean(axis=1), rtol=1e-5)


@pytest.mark.realdata
def test_mitbih_100_whole_record_exceeds_max_samples_and_says_what_fits():
    path = shared_file("wfdb_samples", "100.hea")
    with pytest.raises(ReaderError, match="max_samples=200000") as caught:
        read_sensor(path, channels=["MLII"], rate_hz=360)
    assert "650000 cells" in str(caught.value) and "rate of at most" in str(caught.value)
    fitting = float(str(caught.value).split("rate of at most ")[1].split(" Hz")[0])
    assert read_sensor(path, channels=["MLII"], rate_hz=fitting).values.shape[0] <= 200_000


@pytest.mark.realdata
def test_mat_signal_upsampled_leaves_gaps_and_keeps_channel_order():
    path = shared_file("wfdb_samples", "a103l.hea")
    array = read_sensor(path, channels=["PLETH", "absent", "II"], rate_hz=500, duration_s=1.0)
    assert array.channels == ("PLETH", "absent", "II")
    assert array.values.shape == (500, 3)
    # 250 Hz samples on a 500 Hz grid: every even cell observed, every odd cell a gap.
    assert array.observed[0::2, [0, 2]].all() and not array.observed[1::2].any()
    assert not array.observed[:, 1].any() and np.all(array.values[:, 1] == 0)


@pytest.mark.realdata
def test_ptb_record_reads_all_fifteen_leads_from_two_signal_files():
    path = shared_file("wfdb_samples", "s0010_re.hea")
    leads = [line.split()[-1] for line in path.read_text().splitlines()[1:16]]
    array = read_sensor(path, channels=leads, rate_hz=1000, duration_s=0.5)
    assert len(leads) == 15 and array.values.shape == (500, 15)
    assert array.observed.all()
    assert np.all(array.values.std(axis=0) > 0)


@pytest.mark.realdata
def test_cinc2017_single_lead_at_native_rate_covers_the_record():
    path = shared_file("cinc2017", "A00001.hea")
    n_samples = int(path.read_text().split()[3])
    array = read_sensor(path, channels=["ECG"], rate_hz=300)
    assert array.rate_hz == 300 and array.values.shape == (n_samples, 1)
    assert array.observed.all()


# --- grids built by hand -------------------------------------------------------------------------


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_samples_are_averaged_per_cell_and_gaps_stay_empty(tmp_path, suffix):
    frame = pd.DataFrame(
        {
            "t": [0.0, 0.2, 0.7, 2.4, 2.6],
            "HR": [60.0, 64.0, np.nan, 80.0, np.nan],
            "SpO2": [97.0, np.nan, 95.0, np.nan, 99.0],
        }
    )
    path = _write(frame, tmp_path / f"vitals{suffix}")
    array = read_sensor(path, channels=["SpO2", "HR"], rate_hz=2.0, time_column="t")
    # cells of 0.5 s: [0, .5) -> rows 0, 1; [.5, 1) -> row 2; [2, 2.5) -> row 3; [2.5, 3) -> row 4
    assert array.values.shape == (6, 2)
    np.testing.assert_array_equal(array.observed, [[1, 1], [1, 0], [0, 0], [0, 0], [0, 1], [1, 0]])
    assert array.values[0, 1] == pytest.approx(62.0)
    assert array.values[1, 0] == pytest.approx(95.0)
    # No forward fill: the cells between observations hold 0.0, not the last value.
    assert np.all(array.values[2:4] == 0.0)


def test_duration_crops_and_pads_and_time_unit_scales(tmp_path):
    path = _write(pd.DataFrame({"time": [0, 1, 2, 9], "HR": [1, 2, 3, 4]}), tmp_path / "v.csv")
    cropped = read_sensor(path, channels=["HR"], rate_hz=1 / 60, time_unit="min", duration_s=180)
    assert cropped.values[:, 0].tolist() == [1, 2, 3]
    padded = read_sensor(path, channels=["HR"], rate_hz=1 / 60, time_unit="min", duration_s=900)
    assert padded.values.shape == (15, 1)
    assert padded.observed[:, 0].nonzero()[0].tolist() == [0, 1, 2, 9]
    hourly = read_sensor(path, channels=["HR"], rate_hz=1.0, time_unit="h", duration_s=3 * HOUR)
    assert hourly.observed[[0, 3600, 7200], 0].all() and hourly.observed.sum() == 3


def test_negative_times_start_the_grid_at_the_first_time(tmp_path):
    frame = pd.DataFrame({"time": [-1.5, -0.5, 1.6], "HR": [10.0, 20.0, 30.0]})
    array = read_sensor(_write(frame, tmp_path / "v.csv"), channels=["HR"], rate_hz=1.0)
    assert array.start_s == -1.5
    assert array.values[:, 0].tolist() == [10.0, 20.0, 0.0, 30.0]


def test_wfdb_nan_samples_are_unobserved_and_downsampling_averages_what_is_there(tmp_path):
    import wfdb

    signal = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, np.nan], [np.nan, np.nan]])
    wfdb.wrsamp(
        "rec", fs=4, units=["mV", "mV"], sig_name=["A", "B"], p_signal=signal,
        fmt=["16", "16"], adc_gain=[100, 100], baseline=[0, 0], write_dir=str(tmp_path),
    )  # fmt: skip
    path = tmp_path / "rec.hea"
    native = read_sensor(path, channels=["A", "B"], rate_hz=4)
    np.testing.assert_array_equal(native.observed, ~np.isnan(signal))
    assert np.all(native.values[np.isnan(signal)] == 0.0)
    halved = read_sensor(path, channels=["B", "A"], rate_hz=2)
    np.testing.assert_allclose(halved.values, [[3.0, 1.0], [0.0, 5.0]])
    np.testing.assert_array_equal(halved.observed, [[True, True], [False, True]])


def test_p12_repeated_parameter_in_a_cell_is_averaged(tmp_path):
    path = tmp_path / "p12.txt"
    path.write_text(
        "Time,Parameter,Value\n00:00,Age,54\n00:10,HR,70\n00:50,HR,80\n"
        "01:05,HR,-1\n02:30,HR,90\n02:30,NIMAP,-1\n"
    )
    array = read_sensor(path, channels=["HR", "NIMAP"], rate_hz=1 / HOUR)
    assert array.values[:, 0].tolist() == [75.0, 0.0, 90.0]
    assert array.observed[:, 0].tolist() == [True, False, True]
    assert not array.observed[:, 1].any()


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_p12_malformed_lines_are_skipped_and_counted_and_the_rest_is_read(tmp_path):
    source = shared_file("physionet2012", "set-a", "132539.txt")
    real = source.read_text().splitlines()
    broken = tmp_path / "132539.txt"
    bad = ["SECRET-garbage;;;", "10:45,,1.9", "00:40,HR,seventy", "00:41,HR,1e999", "4h,HR,70", "1,2,3,4"]
    broken.write_text("\n".join([*real[:10], *bad, *real[10:]]) + "\n")
    clean = read_sensor(source, channels=["HR", "Temp"], rate_hz=1 / HOUR, duration_s=48 * HOUR)
    array = read_sensor(broken, channels=["HR", "Temp"], rate_hz=1 / HOUR, duration_s=48 * HOUR)
    np.testing.assert_array_equal(array.values, clean.values)
    np.testing.assert_array_equal(array.observed, clean.observed)
    assert clean.skipped == {}
    assert array.skipped == {
        "line without 3 fields and a parameter name": 3,
        "line whose value is not a finite number": 2,
        "line whose time is not HH:MM": 1,
    }
    assert not any("SECRET" in reason or "seventy" in reason for reason in array.skipped)


def test_p12_record_with_no_usable_line_is_unreadable_and_says_what_was_skipped(tmp_path):
    path = tmp_path / "p12.txt"
    path.write_text("Time,Parameter,Value\n10:45,,1.9\n10:50,,SECRET\nxx,HR,1\n")
    with pytest.raises(ReaderError, match=r"none is usable \(skipped: 2 line without") as caught:
        read_sensor(path, channels=["HR"], rate_hz=1.0)
    assert "SECRET" not in str(caught.value) and "1 line whose time is not HH:MM" in str(caught.value)


def test_p12_file_without_any_requested_parameter_lists_what_it_has(tmp_path):
    path = tmp_path / "p12.txt"
    path.write_text("Time,Parameter,Value\n00:00,Age,54\n00:10,HR,70\n")
    with pytest.raises(ReaderError, match=r"none of the channels.*\['Age', 'HR'\]"):
        read_sensor(path, channels=["SpO2"], rate_hz=1.0)


def _header(path: Path, signal_file: str) -> Path:
    path.write_text(f"rec 1 4 4\n{signal_file} 16 100(0)/mV 16 0 0 0 0 A\n")
    return path


def test_wfdb_header_pointing_to_a_missing_signal_file_is_refused(tmp_path):
    path = _header(tmp_path / "rec.hea", "rec.dat")
    with pytest.raises(ReaderError, match=r"'rec\.dat' named by the header is missing"):
        read_sensor(path, channels=["A"], rate_hz=4)


@pytest.mark.parametrize("signal_file", ["../x.dat", "/tmp/x.dat", ".."])
def test_wfdb_header_naming_a_file_outside_its_folder_is_refused(tmp_path, signal_file):
    (tmp_path / "x.dat").write_bytes(b"\x00" * 8)  # exists, so only the guard can stop the read
    inner = tmp_path / "inner"
    inner.mkdir()
    path = _header(inner / "rec.hea", signal_file)
    with pytest.raises(ReaderError, match="plain file name in the header's own folder"):
        read_sensor(path, channels=["A"], rate_hz=4)


def test_wfdb_signal_file_symlinked_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "x.dat").write_bytes(b"\x00" * 8)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "rec.dat").symlink_to(tmp_path / "x.dat")
    with pytest.raises(ReaderError, match="links outside"):
        read_sensor(_header(inner / "rec.hea", "rec.dat"), channels=["A"], rate_hz=4)


def test_empty_csv_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ReaderError, match="empty"):
        read_sensor(path, channels=["HR"], rate_hz=1.0)
    header_only = tmp_path / "header.csv"
    header_only.write_text("time,HR\n")
    with pytest.raises(ReaderError, match="no"):
        read_sensor(header_only, channels=["HR"], rate_hz=1.0)


def test_csv_bad_cells_rows_without_time_and_long_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text(
        "time,HR,SpO2\n0,60,97\n1,61,\n2,62,ninety-SECRET\nnoon,1,1\n,2,2\n3,63,98,EXTRA\n4,64,99\n"
    )
    array = read_sensor(path, channels=["HR", "SpO2"], rate_hz=1.0)
    assert array.values.shape == (5, 2)
    np.testing.assert_array_equal(array.observed[:, 0], [True, True, True, False, True])
    np.testing.assert_array_equal(array.observed[:, 1], [True, False, False, False, True])
    assert array.values[4].tolist() == [64.0, 99.0]
    assert array.skipped == {
        "line with more fields than the header": 1,
        "row whose time is blank or not a finite number": 2,
        "cell that is not a number (read as unobserved)": 1,
    }
    path.write_text("time,HR\nnoon,60\n,61\n")
    with pytest.raises(ReaderError, match=r"none is usable \(skipped: 2 row whose time"):
        read_sensor(path, channels=["HR"], rate_hz=1.0)


def test_table_without_any_requested_channel_lists_its_columns(tmp_path):
    path = _write(pd.DataFrame({"time": [0], "HR": [60]}), tmp_path / "v.parquet")
    with pytest.raises(ReaderError, match=r"none of the channels \['SpO2'\].*\['HR'\]"):
        read_sensor(path, channels=["SpO2"], rate_hz=1.0)
    with pytest.raises(ReaderError, match="time column 'clock'"):
        read_sensor(path, channels=["HR"], rate_hz=1.0, time_column="clock")


def test_truncated_parquet_and_unknown_extension_are_refused(tmp_path):
    whole = _write(pd.DataFrame({"time": [0, 1], "HR": [60, 61]}), tmp_path / "v.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: math.ceil(whole.stat().st_size / 2)])
    with pytest.raises(ReaderError, match="Parquet"):
        read_sensor(cut, channels=["HR"], rate_hz=1.0)
    other = tmp_path / "v.json"
    other.write_text("{}")
    with pytest.raises(ReaderError, match=r"\.csv, \.parquet, \.hea or \.txt"):
        read_sensor(other, channels=["HR"], rate_hz=1.0)


def test_truncated_wfdb_signal_file_is_refused(tmp_path):
    import wfdb

    wfdb.wrsamp(
        "rec", fs=10, units=["mV"], sig_name=["A"], p_signal=np.ones((100, 1)), fmt=["16"],
        adc_gain=[100], baseline=[0], write_dir=str(tmp_path),
    )  # fmt: skip
    signal = tmp_path / "rec.dat"
    signal.write_bytes(signal.read_bytes()[:75])
    with pytest.raises(ReaderError, match="signal could not be read"):
        read_sensor(tmp_path / "rec.hea", channels=["A"], rate_hz=10)
