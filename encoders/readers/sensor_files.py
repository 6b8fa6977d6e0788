"""Sensor streams (bedside vitals, ECG, wearables) placed on a regular time grid with a mask.

Four file formats, chosen by extension:

- ``.csv`` / ``.parquet``: a time column (in ``time_unit``) and one column per channel; a blank
  cell is an unobserved value.
- ``.hea``: a WFDB record (signal in ``.dat`` or ``.mat`` beside the header); NaN samples are
  unobserved.
- ``.txt``: the PhysioNet 2012 long format, ``Time,Parameter,Value`` with ``HH:MM`` times since
  admission and ``-1`` for an unknown value.

A malformed line (P12) or row (CSV, Parquet) is skipped and counted per reason in
``SensorArray.skipped``; a non-numeric cell is set unobserved and counted. A file is unreadable only
when nothing usable is left.

Grid cell ``i`` covers ``[start + i / rate_hz, start + (i + 1) / rate_hz)``. Samples falling in the
same cell are averaged (summed for the ``summed`` channels: amounts such as urine output); a cell
with no sample stays unobserved (0.0 and ``observed=False``) and is
never forward-filled, so the encoder sees exactly what was measured.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from encoders.readers.errors import ReaderError
from encoders.readers.physionet2012_text import (  # noqa: F401  (the skip reasons are public here too)
    P12_HEADER,
    P12_UNKNOWN,
    SKIP_P12_FIELDS,
    SKIP_P12_TIME,
    SKIP_P12_VALUE,
    p12_samples,
    p12_samples_together,
)
from encoders.readers.sensor_samples import Samples, no_channels, skip_note
from encoders.readers.tabular_files import numeric_column

TIME_UNITS_S: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}
# Float products such as 0.7 * 10 land a hair below the integer; this keeps them in their cell.
_EDGE_EPS = 1e-9


@dataclass(frozen=True)
class SensorArray:
    """A multichannel series on a regular grid.

    Attributes:
        values: ``(T, C)`` float32, the mean of the samples in each cell; 0.0 where not observed.
        observed: ``(T, C)`` bool, True where at least one sample fell in the cell.
        channels: the ``C`` channel names, in the order asked for.
        rate_hz: grid rate; cell ``i`` starts at ``start_s + i / rate_hz`` seconds.
        start_s: time of grid cell 0, in seconds.
        skipped: reason -> number of lines, rows or cells of the file that were skipped (empty when
            every line was usable). Reasons name no line content.
        observed_cells: ``(K,)`` int64 flat indices of the observed cells in row-major order
            (``np.flatnonzero(observed)``) when the reader knows them, else None; it saves
            consumers a scan of a long, mostly empty grid.
    """

    values: np.ndarray
    observed: np.ndarray
    channels: tuple[str, ...]
    rate_hz: float
    start_s: float
    skipped: Mapping[str, int] = field(default_factory=dict)
    observed_cells: np.ndarray | None = None

    def cells(self) -> np.ndarray:
        """``(K,)`` flat indices of the observed cells, row-major: ``np.flatnonzero(observed)``."""
        known = self.observed_cells
        if known is not None and len(known) == np.count_nonzero(self.observed):
            return known
        return np.flatnonzero(self.observed)


def read_sensor(
    path: str | Path,
    *,
    channels: Sequence[str],
    rate_hz: float,
    time_column: str = "time",
    time_unit: str = "s",
    duration_s: float | None = None,
    max_samples: int = 200_000,
    summed: Sequence[str] = (),
    max_bytes: int | None = None,
) -> SensorArray:
    """Read a sensor file onto a regular grid of ``rate_hz``.

    Args:
        path: a ``.csv``, ``.parquet``, ``.hea`` (WFDB) or ``.txt`` (PhysioNet 2012) file.
        channels: the ``C`` channel names wanted; one the file lacks comes back all unobserved.
        rate_hz: grid rate in Hz (``1 / 3600`` for one cell per hour).
        time_column: name of the time column in CSV and Parquet files (WFDB and PhysioNet 2012
            files carry their own timing).
        time_unit: unit of that column: ``"s"``, ``"min"`` or ``"h"``.
        duration_s: grid length in seconds (crop or pad); up to the last sample when ``None``.
        max_samples: most grid cells ``T`` allowed.
        summed: channels whose samples in one cell add up instead of being averaged.
        max_bytes: largest CSV, Parquet or PhysioNet 2012 file read (they are read whole); None for
            no limit. WFDB records are read only as far as the grid reaches, so they have none.

    Returns:
        A :class:`SensorArray` with ``values`` and ``observed`` of shape ``(T, C)``.

    Raises:
        ReaderError: the file is unreadable, larger than ``max_bytes``, holds none of ``channels``,
            or the grid is too long.
    """
    path = Path(path)
    channels = tuple(channels)
    if not channels:
        raise ValueError("read_sensor needs at least one channel name")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    if time_unit not in TIME_UNITS_S:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS_S)}, got {time_unit!r}")
    if not path.is_file():
        raise ReaderError(path, "expected a sensor file, but there is no such file")
    suffix = path.suffix.lower()
    if suffix != ".hea" and max_bytes is not None and path.stat().st_size > max_bytes:
        raise _too_large(path, path.stat().st_size, max_bytes)
    if suffix == ".hea":
        return _read_wfdb(path, channels, rate_hz, duration_s, max_samples)
    if suffix == ".csv":
        samples = _table_samples(path, _read_csv(path), channels, time_column, time_unit)
    elif suffix == ".parquet":
        samples = _table_samples(path, _read_parquet(path), channels, time_column, time_unit)
    elif suffix == ".txt":
        samples = p12_samples(path, channels)
    else:
        raise ReaderError(path, f"expected a sensor file ending .csv, .parquet, .hea or .txt, got {suffix!r}")
    (gridded,) = _on_grids([(path, samples)], channels, rate_hz, duration_s, max_samples, summed)
    if isinstance(gridded, ReaderError):
        raise gridded
    return gridded


def read_p12_together(
    files: Sequence[tuple[Path, bytes]],
    *,
    channels: Sequence[str],
    rate_hz: float,
    duration_s: float | None = None,
    max_samples: int = 200_000,
    summed: Sequence[str] = (),
    max_bytes: int | None = None,
) -> list[SensorArray | ReaderError]:
    """:func:`read_sensor` of many PhysioNet 2012 ``.txt`` files from their bytes, parsed together
    (:func:`~encoders.readers.physionet2012_text.p12_samples_together`).

    Returns:
        Per file, in order, its grid or the :class:`ReaderError` :func:`read_sensor` raises for it.
    """
    channels = tuple(channels)
    small = [max_bytes is None or len(data) <= max_bytes for _, data in files]
    parsed = iter(p12_samples_together([f for f, ok in zip(files, small, strict=True) if ok], channels))
    found = [
        next(parsed) if ok else _too_large(path, len(data), max_bytes)
        for (path, data), ok in zip(files, small, strict=True)
    ]
    usable = [(files[n][0], samples) for n, samples in enumerate(found) if isinstance(samples, Samples)]
    gridded = iter(_on_grids(usable, channels, rate_hz, duration_s, max_samples, summed))
    return [next(gridded) if isinstance(samples, Samples) else samples for samples in found]


def _too_large(path: Path, size: int, max_bytes: int | None) -> ReaderError:
    return ReaderError(
        path,
        f"the file has {size / 1e6:.1f} MB, more than the {(max_bytes or 0) / 1e6:g} MB "
        "allowed; raise max_file_mb of this sensor modality in the cohort spec to read it",
    )


def _on_grids(
    files: Sequence[tuple[Path, Samples]],
    channels: tuple[str, ...],
    rate_hz: float,
    duration_s: float | None,
    max_samples: int,
    summed: Sequence[str],
) -> list[SensorArray | ReaderError]:
    """Each file's ``samples`` on the grid :func:`read_sensor` describes (or the error for a grid
    too long), all files gridded together."""
    found: list[SensorArray | ReaderError | None] = []
    placed: list[tuple[int, Samples, float, int]] = []  # (position in found, samples, start, cells)
    for path, samples in files:
        start = 0.0 if samples.times_s.min() >= 0 else float(samples.times_s.min())
        try:
            n_cells = _n_cells(path, samples.times_s.max() - start, rate_hz, duration_s, max_samples)
        except ReaderError as error:
            found.append(error)
            continue
        placed.append((len(found), samples, start, n_cells))
        found.append(None)  # its grid, below
    if not placed:
        return [f for f in found if f is not None]
    owner = np.repeat(np.arange(len(placed)), [len(samples.times_s) for _, samples, _, _ in placed])
    times = np.concatenate([samples.times_s for _, samples, _, _ in placed])
    starts = np.array([start for _, _, start, _ in placed])
    cells = np.floor((times - starts[owner]) * rate_hz + _EDGE_EPS).astype(np.int64)
    grids = _grids(
        owner,
        cells,
        np.concatenate([samples.values for _, samples, _, _ in placed]),
        np.array([n for _, _, _, n in placed]),
        [name in summed for name in channels],
    )
    for (at, samples, start, _), (values, observed, observed_cells) in zip(placed, grids, strict=True):
        found[at] = SensorArray(
            values, observed, channels, float(rate_hz), start, dict(samples.skipped), observed_cells
        )
    return [f for f in found if f is not None]


def _n_cells(path: Path, span_s: float, rate_hz: float, duration_s: float | None, max_samples: int) -> int:
    """Grid length: ``ceil(duration_s * rate)``, else enough cells to hold a sample at ``span_s``.

    Raises:
        ReaderError: more than ``max_samples`` cells; the message says which rate or duration fits.
    """
    if duration_s is not None:
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive, got {duration_s!r}")
        n = max(1, math.ceil(duration_s * rate_hz - _EDGE_EPS))
        seconds, fitting_rate = duration_s, max_samples / duration_s
    else:
        n = math.floor(span_s * rate_hz + _EDGE_EPS) + 1
        seconds, fitting_rate = span_s, (max_samples - 1) / span_s if span_s > 0 else math.inf
    if n > max_samples:
        raise ReaderError(
            path,
            f"the grid would have {n} cells at {rate_hz:g} Hz over {seconds:g} s, more than "
            f"max_samples={max_samples}; use a rate of at most {_round_down(fitting_rate)} Hz "
            f"or a duration_s of at most {_round_down(max_samples / rate_hz)} s",
        )
    return n


def _round_down(x: float, digits: int = 6) -> str:
    """``x`` to ``digits`` significant digits, never rounded up (a suggested limit must fit)."""
    if not (math.isfinite(x) and x > 0):
        return f"{x:g}"
    scale = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return f"{math.floor(x / scale) * scale:.{digits}g}"


def _grid(
    cells: np.ndarray, samples: np.ndarray, n_cells: int, summed: Sequence[bool] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average (or, for ``summed`` channels, add) samples into cells.

    Args:
        cells: ``(N,)`` int64 grid cell of each sample (outside ``[0, n_cells)`` is dropped).
        samples: ``(N, C)`` float64, NaN where not observed.
        summed: per channel, True to add its samples up (default: average every channel).

    Returns:
        ``values`` ``(n_cells, C)`` float32, 0.0 where unobserved, ``observed`` (same shape), and
        the ``(K,)`` int64 flat indices of the observed cells, row-major.
    """
    (grid,) = _grids(np.zeros(len(cells), dtype=np.int64), cells, samples, np.array([n_cells]), summed)
    return grid


def _grids(
    owner: np.ndarray,
    cells: np.ndarray,
    samples: np.ndarray,
    n_cells: np.ndarray,
    summed: Sequence[bool] = (),
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`_grid` of the samples of several series at once.

    Args:
        owner: ``(N,)`` int64 series of each sample, ascending.
        cells: ``(N,)`` int64 cell of each sample in its series' grid.
        samples: ``(N, C)`` float64, NaN where not observed.
        n_cells: ``(F,)`` grid length of each series.
        summed: per channel, True to add its samples up.

    Returns:
        Per series, what :func:`_grid` returns for it alone (the same values, bit for bit).
    """
    n_channels = samples.shape[1]
    inside = (cells >= 0) & (cells < n_cells[owner])
    rows, columns = np.nonzero(~np.isnan(samples) & inside[:, None])
    # Only the (series, cell, channel) triples that hold samples are touched; bincount adds each
    # triple's samples in file order. A series' cells are offset past those of the ones before.
    offsets = np.concatenate([[0], np.cumsum(n_cells * n_channels)])
    pairs, which = np.unique(offsets[owner[rows]] + cells[rows] * n_channels + columns, return_inverse=True)
    counts = np.bincount(which, minlength=len(pairs))
    sums = np.bincount(which, weights=samples[rows, columns], minlength=len(pairs))
    averaged = np.ones(n_channels, dtype=bool)
    averaged[: len(summed)] = ~np.asarray(summed[:n_channels], dtype=bool)
    means = np.where(averaged[pairs % n_channels], sums / counts, sums).astype(np.float32)
    bounds = np.searchsorted(pairs, offsets)
    grids = []
    for f, n in enumerate(n_cells.tolist()):
        own = pairs[bounds[f] : bounds[f + 1]] - offsets[f]
        values = np.zeros(n * n_channels, dtype=np.float32)
        observed = np.zeros(n * n_channels, dtype=bool)
        values[own] = means[bounds[f] : bounds[f + 1]]
        observed[own] = True
        grids.append((values.reshape(n, n_channels), observed.reshape(n, n_channels), own))
    return grids


# --- CSV and Parquet ---------------------------------------------------------------------------


SKIP_EXTRA_FIELDS = "line with more fields than the header"
SKIP_BAD_TIME = "row whose time is blank or not a finite number"
SKIP_BAD_CELL = "cell that is not a number (read as unobserved)"


def _read_csv(path: Path) -> tuple[pd.DataFrame, int]:
    """The table as text, and how many lines had more fields than the header (skipped)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # Text first: parsing numbers here ourselves is how a bad cell is counted, not guessed.
            frame = pd.read_csv(
                path, dtype=str, encoding="utf-8-sig", skipinitialspace=True, on_bad_lines="warn"
            )
    except pd.errors.EmptyDataError:
        raise ReaderError(path, "expected a CSV table with a header line, but the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ReaderError(
            path, f"expected a UTF-8 CSV table, but it could not be parsed ({type(error).__name__})"
        ) from None
    extra = sum(str(w.message).count("Skipping line") for w in caught)
    return frame, extra


def _read_parquet(path: Path) -> tuple[pd.DataFrame, int]:
    try:
        return pd.read_parquet(path), 0
    except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
        raise ReaderError(
            path, f"expected a Parquet table, but it could not be read ({type(error).__name__})"
        ) from None


def _table_samples(
    path: Path,
    read: tuple[pd.DataFrame, int],
    channels: Sequence[str],
    time_column: str,
    time_unit: str,
) -> Samples:
    """Samples from a wide table: rows without a usable time are skipped, bad cells unobserved."""
    frame, extra_fields = read
    skipped: Counter[str] = Counter({SKIP_EXTRA_FIELDS: extra_fields} if extra_fields else {})
    if time_column not in frame.columns:
        semicolons = len(frame.columns) == 1 and ";" in str(frame.columns[0])
        hint = "; the header has ';' between names: save the file with commas" if semicolons else ""
        raise ReaderError(
            path,
            f"expected a time column {time_column!r}, but the columns are {list(frame.columns)}{hint}",
        )
    present = [name for name in channels if name in frame.columns and name != time_column]
    if not present:
        has = [str(name) for name in frame.columns if name != time_column]
        raise no_channels(path, channels, has, "columns")
    times, _, _ = numeric_column(frame[time_column])
    usable = ~np.isnan(times)  # a blank time is as unusable as a bad one
    if (~usable).any():
        skipped[SKIP_BAD_TIME] += int((~usable).sum())
    values = np.full((len(frame), len(channels)), np.nan)
    for c, name in enumerate(channels):
        if name not in present:
            continue
        values[:, c], missing, _ = numeric_column(frame[name])
        bad = usable & ~missing & np.isnan(values[:, c])
        if bad.any():
            skipped[SKIP_BAD_CELL] += int(bad.sum())
    if not usable.any():
        raise ReaderError(path, f"expected at least one row of samples with a time{skip_note(skipped)}")
    return Samples(times[usable] * TIME_UNITS_S[time_unit], values[usable], dict(skipped))


# --- WFDB ----------------------------------------------------------------------------------------


def _read_wfdb(
    path: Path,
    channels: tuple[str, ...],
    rate_hz: float,
    duration_s: float | None,
    max_samples: int,
) -> SensorArray:
    """A WFDB record: samples ``k`` at ``k / fs`` seconds, averaged or placed into grid cells."""
    import wfdb

    _check_wfdb_signal_files(path)
    record = str(path.with_suffix(""))
    try:
        header = wfdb.rdheader(record)
    except Exception as error:  # wfdb raises bare ValueErrors and more for a malformed header
        raise ReaderError(
            path, f"expected a WFDB header, but wfdb could not parse it ({type(error).__name__})"
        ) from None
    names = list(header.sig_name or [])
    present = [name for name in channels if name in names]
    if not present:
        raise no_channels(path, channels, names, "signals")
    fs, length = float(header.fs), int(header.sig_len or 0)
    if not (fs > 0 and length > 0):
        raise ReaderError(path, "expected a WFDB record with a sampling frequency and samples")
    n_cells = _n_cells(path, (length - 1) / fs, rate_hz, duration_s, max_samples)
    # Only the samples that land inside the grid are read: long records cropped by duration_s.
    sampto = min(length, math.ceil(n_cells * fs / rate_hz))
    try:
        signal = wfdb.rdrecord(
            record, sampto=sampto, channels=[names.index(name) for name in present]
        ).p_signal
    except Exception as error:  # truncated or corrupt signal files surface as many types
        raise ReaderError(
            path, f"the WFDB signal could not be read ({type(error).__name__}: truncated file?)"
        ) from None
    cells = np.floor(np.arange(signal.shape[0]) * (rate_hz / fs) + _EDGE_EPS).astype(np.int64)
    gridded, seen, _ = _grid(cells, np.asarray(signal, dtype=np.float64), n_cells)
    values = np.zeros((n_cells, len(channels)), dtype=np.float32)
    observed = np.zeros((n_cells, len(channels)), dtype=bool)
    where = [channels.index(name) for name in present]
    values[:, where], observed[:, where] = gridded, seen
    return SensorArray(values, observed, channels, float(rate_hz), 0.0)


def _check_wfdb_signal_files(path: Path) -> None:
    """Refuse a header whose signal files are absent or outside its folder, before wfdb reads."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as error:
        raise ReaderError(path, f"the WFDB header could not be read ({type(error).__name__})") from None
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines or len(lines[0]) < 2 or not lines[0][1].isdigit():
        raise ReaderError(path, "expected a WFDB header whose first line is 'RECORD NSIGNALS [FS ...]'")
    if "/" in lines[0][0]:
        raise ReaderError(path, "multi-segment WFDB records are not supported; give a single record")
    n_signals = int(lines[0][1])
    if len(lines) < 1 + n_signals:
        raise ReaderError(
            path, f"the WFDB header announces {n_signals} signals but describes {len(lines) - 1}"
        )
    folder = path.parent.resolve()
    for name in dict.fromkeys(fields[0] for fields in lines[1 : 1 + n_signals]):
        if name == "~" or name in (".", "..") or "/" in name or "\\" in name or ":" in name:
            raise ReaderError(
                path,
                f"the header names signal file {name!r}; expected a plain file name in the "
                "header's own folder",
            )
        signal = path.parent / name
        if not signal.is_file():
            raise ReaderError(path, f"the signal file {name!r} named by the header is missing")
        if signal.resolve().parent != folder:
            raise ReaderError(path, f"the signal file {name!r} links outside the header's folder; refused")
