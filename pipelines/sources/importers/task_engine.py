"""The engine every event-level importer shares: a task turned into a cohort, streaming through DuckDB.

A source adapter (MIMIC-IV, FHIR, OMOP) describes its data as SQL over a DuckDB connection:

- ``rows``: one row per cohort row with ``row_id``, ``group_id`` (the patient), ``subject`` (the key
  its events carry), ``index_time``, ``outcome`` (0/1, or NULL when unknown) and the static columns
  known at the index time;
- event tables yielding ``subject, time, code, value, unit``;
- optionally notes yielding ``subject, time, text``.

The engine keeps the events whose code a task variable names and whose time lies in the row's
observation window ``[index + start_h, index + end_h)``; anything else (earlier, later, another
patient's) never reaches a feature. It then leaves out and counts values without a number, in
another unit than the variable's, or outside the variable's plausible range, and writes the latest
kept value per variable as a tabular column, every kept value as a channel of the row's sensor file
(``series/ROW.csv``: ``hours_since_index`` then one column per variable), and in-window notes as
``notes/ROW.txt``. ``variables.csv`` lists every variable with its codes, unit and counts.

DuckDB reads ``.csv.gz`` files as a stream and spills to disk past ``memory_limit``, so the full
MIMIC-IV (``labevents`` alone is about 120 million rows) is imported within a fixed memory bound.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml
from pydantic import ValidationError

from data_schemas import TaskSpec
from pipelines.sources.importers._common import ImportResult, write_cohort

SERIES_DIR = "series"
NOTES_DIR = "notes"
CATALOGUE = "variables.csv"
TIME_COLUMN = "hours_since_index"
FETCH_ROWS = 50_000
MEMORY_ENV = "DEEPWE_IMPORT_MEMORY"
DEFAULT_MEMORY = "2GB"
AGE_BAND_SQL = (
    "CASE WHEN {age} IS NULL THEN NULL WHEN {age} < 50 THEN '<50' WHEN {age} < 65 THEN '50-64' "
    "WHEN {age} < 80 THEN '65-79' ELSE '80+' END"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class EventTable:
    """One event table of a source: ``sql`` yields ``subject, time, code, value, unit``.

    ``name`` is the file it reads (for messages and counts).
    """

    name: str
    sql: str


@dataclass
class SourceData:
    """What a source adapter hands the engine (see the module docstring for the SQL contract).

    Attributes:
        con: the DuckDB connection the SQL runs on (views and tables registered by the adapter).
        rows_sql: SQL of the cohort rows.
        id_column, group_column: the names of ``row_id`` and ``group_id`` in the written table.
        numeric, categorical: static columns the source offers (``rows_sql`` yields them);
            the task's ``static`` picks among them.
        subgroups: columns of ``rows_sql`` to slice metrics by.
        events: the event tables.
        notes_sql: SQL of notes, or None when the source has none.
        images_sql: SQL of image references (``subject, time, path`` with an absolute path), or None.
        code_names: source code -> its name in the source's dictionary.
        description: the cohort's description (source, licence, task).
        skipped: records left out by the adapter, by reason.
        notes: facts for the import summary (tables absent, layout differences).
    """

    con: duckdb.DuckDBPyConnection
    rows_sql: str
    id_column: str
    group_column: str
    numeric: list[str]
    categorical: list[str]
    subgroups: list[str]
    events: list[EventTable]
    notes_sql: str | None
    code_names: dict[str, str]
    description: str
    images_sql: str | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Variable:
    name: str
    codes: tuple[str, ...]
    tabular: bool
    sensor: bool
    unit: str | None
    low: float | None
    high: float | None


def reads_tables(importer: Callable[..., ImportResult]) -> Callable[..., ImportResult]:
    """Turn a DuckDB error while reading a source (a truncated ``.gz``, a ragged line in a core table)
    into a ValueError that names the source and DuckDB's reason, as every importer error is."""

    @functools.wraps(importer)
    def run(src: str | Path, out: str | Path, **options: object) -> ImportResult:
        try:
            return importer(src, out, **options)
        except duckdb.Error as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"{src}: a table could not be read ({error.__class__.__name__}: {reason})"
            ) from None

    return run


def skip_unreadable(source: SourceData, table: str, error: duckdb.Error) -> None:
    """Record an event table that cannot be read (a truncated ``.gz``, a ragged line): one unreadable
    table must not lose the others, so it is skipped, counted and named in the summary."""
    source.notes.append(f"{table}: could not be read ({error.__class__.__name__}); its events were skipped")
    source.skipped[f"unreadable event table ({table})"] += 1


def connect(memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to a temporary folder past ``memory_limit``.

    The limit defaults to the environment variable ``DEEPWE_IMPORT_MEMORY``, else ``2GB``.
    """
    memory_limit = memory_limit or os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory_limit.strip()):
        raise ValueError(f"{MEMORY_ENV}: expected a memory size such as 2GB or 500MB, got {memory_limit!r}")
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{_sql_text(memory_limit)}'")
    con.execute(f"SET temp_directory = '{_sql_text(tempfile.gettempdir())}/deepwe-duckdb'")
    con.execute("SET preserve_insertion_order = false")
    return con


def read_task(path: str | Path) -> TaskSpec:
    """Parse and validate a task YAML file.

    Raises:
        ValueError: the file is absent, not YAML, or breaks the task schema; the message names the
            file and each offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected a task YAML file, but there is no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: expected a task in YAML ({error.__class__.__name__}: {error})") from None
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as error:
        faults = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"{path}: expected a valid import task; {faults}") from None


def csv_source(path: Path) -> str:
    """SQL reading a (possibly gzipped) CSV file as text columns, streaming.

    Every column is text so that one odd cell deep in a 100-million-row file cannot stop the read
    (type sniffing looks at a sample only); adapters cast with ``TRY_CAST`` and count what fails.
    """
    return (
        f"read_csv('{_sql_text(str(path))}', header = true, all_varchar = true, "
        "auto_detect = true, sample_size = 20480)"
    )


def csv_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    """The header of a CSV file, as DuckDB reads it."""
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {csv_source(path)}").fetchall()]


def missing_columns(con: duckdb.DuckDBPyConnection, path: Path, required: list[str]) -> list[str]:
    """The ``required`` columns the header of ``path`` lacks."""
    columns = set(csv_columns(con, path))
    return [c for c in required if c not in columns]


def build_cohort(source: SourceData, task: TaskSpec, out: Path, *, name: str) -> ImportResult:
    """Apply ``task`` to ``source`` and write the cohort into ``out``.

    Raises:
        ValueError: the task names a static column the source lacks, two variables share a code, or
            the rows are not unique.
    """
    con = source.con
    out = Path(out)
    static = _check_static(task, source)
    taken = {
        source.id_column,
        source.group_column,
        task.outcome.column,
        *task.static,
        *source.subgroups,
        "series_path",
        "notes_path",
        "image_path",
    }
    variables = _variables(task, source.code_names, taken)
    _stage_rows(con, source, task)
    flags = _stage_events(con, source, variables)
    units = _units(con, variables)
    flags += _keep(con, variables, units)
    out.mkdir(parents=True, exist_ok=True)
    latest = _latest(con, [v.name for v in variables if v.tabular])
    channels = _write_series(con, out, [v.name for v in variables if v.sensor])
    notes = _write_notes(con, source, out) if task.notes and source.notes_sql else {}
    images = _latest_images(con, source, flags) if source.images_sql else {}
    data_root, files = _place_files(out, {"series_path": channels, "notes_path": notes}, images)
    with_values = set(_channels(con)) | {name for values in latest.values() for name in values}
    present = [v for v in variables if v.name in with_values]
    columns, rows = _table(con, source, task, static, present, latest, files)
    spec = _spec(
        source,
        task,
        name,
        static,
        [v.name for v in present if v.tabular],
        [v.name for v in present if v.sensor],
        files,
    )
    if data_root is not None:
        spec["data_root"] = data_root
    _write_catalogue(out, variables, units, flags)
    skipped = Counter(source.skipped)
    for (reason, _), count in flags.items():
        if reason != "kept":
            skipped[reason] += count
    summary = [
        *source.notes,
        f"{len(variables)} variables mapped, {len(channels)} rows with a series; units and counts per "
        f"variable in {CATALOGUE}",
    ]
    empty = [v.name for v in variables if v.name not in with_values]
    if empty:
        summary.append(f"{len(empty)} variables have no kept value in any window: {', '.join(empty)}")
    return write_cohort(out, spec, columns, rows, skipped=skipped, notes=summary)


def _check_static(task: TaskSpec, source: SourceData) -> list[str]:
    offered = [*source.numeric, *source.categorical]
    unknown = [c for c in task.static if c not in offered]
    if unknown:
        raise ValueError(
            f"task {task.name!r}: static column(s) {unknown} are not offered by the {task.source} "
            f"source; it offers {', '.join(offered)}"
        )
    return list(task.static)


def _variables(task: TaskSpec, code_names: dict[str, str], taken: set[str]) -> list[_Variable]:
    """The task's variables, named; ``taken`` are the table's other column names."""
    variables, owner = [], {}
    for spec in task.variables:
        name = spec.name or code_names.get(spec.codes[0]) or f"code {spec.codes[0]}"
        name = name.replace(",", ";").replace("\n", " ").strip()
        for code in spec.codes:
            if code in owner:
                raise ValueError(
                    f"task {task.name!r}: code {code!r} is listed by variables {owner[code]!r} and "
                    f"{name!r}; give each code one variable"
                )
            owner[code] = name
        if name in taken or any(v.name == name for v in variables):
            raise ValueError(
                f"task {task.name!r}: variable name {name!r} is already a column of the cohort; "
                "give the variable another name"
            )
        variables.append(
            _Variable(
                name=name,
                codes=tuple(spec.codes),
                tabular="tabular" in spec.to,
                sensor="sensor" in spec.to,
                unit=spec.unit,
                low=spec.range[0] if spec.range else None,
                high=spec.range[1] if spec.range else None,
            )
        )
    return variables


def _stage_rows(con: duckdb.DuckDBPyConnection, source: SourceData, task: TaskSpec) -> None:
    start_ms = round(task.window.start_h * 3_600_000)
    end_ms = round(task.window.end_h * 3_600_000)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE task_rows AS
        SELECT *, index_time + to_milliseconds({start_ms}) AS window_start,
               index_time + to_milliseconds({end_ms}) AS window_end
        FROM ({source.rows_sql})"""
    )
    repeated = con.execute(
        "SELECT count(*) FROM (SELECT row_id FROM task_rows GROUP BY row_id HAVING count(*) > 1)"
    ).fetchone()[0]
    if repeated:
        raise ValueError(
            f"{repeated} row ids repeat in the source's {source.id_column}; expected one row each"
        )


def _stage_events(con: duckdb.DuckDBPyConnection, source: SourceData, variables: list[_Variable]) -> Counter:
    """Select the events of the task's codes, placed against each row's window.

    Only in-window events are stored (``placed``); events before or after are only counted, so the
    leakage rule holds by construction: a feature is built from ``placed`` alone.
    """
    codes = [(code, v.name) for v in variables for code in v.codes]
    con.execute("CREATE OR REPLACE TEMP TABLE task_codes (code VARCHAR, variable VARCHAR)")
    if codes:
        con.executemany("INSERT INTO task_codes VALUES (?, ?)", codes)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE selected (source VARCHAR, subject VARCHAR, time TIMESTAMP, "
        "variable VARCHAR, value DOUBLE, unit VARCHAR)"
    )
    for table in source.events:
        try:
            con.execute(
                f"""INSERT INTO selected
                SELECT '{_sql_text(table.name)}', e.subject, e.time, c.variable, e.value, e.unit
                FROM ({table.sql}) e JOIN task_codes c ON c.code = e.code"""
            )
        except duckdb.Error as error:
            con.execute(f"DELETE FROM selected WHERE source = '{_sql_text(table.name)}'")
            skip_unreadable(source, table.name, error)
    flags: Counter = Counter()
    for name, variable, count in con.execute(
        "SELECT source, variable, count(*) FROM selected WHERE time IS NULL GROUP BY ALL"
    ).fetchall():
        flags[(f"event without a readable time ({name})", variable)] += count
    con.execute(
        """CREATE OR REPLACE TEMP TABLE placed AS
        SELECT r.row_id, s.variable, s.value, s.unit,
               date_diff('millisecond', r.index_time, s.time) / 3600000.0 AS hours
        FROM selected s JOIN task_rows r ON r.subject = s.subject
        WHERE s.time >= r.window_start AND s.time < r.window_end"""
    )
    for variable, count in con.execute(
        """SELECT s.variable, count(*) FROM selected s JOIN task_rows r ON r.subject = s.subject
        WHERE s.time >= r.window_end GROUP BY ALL"""
    ).fetchall():
        flags[("event after a row's observation window (left out: no leakage)", variable)] += count
    return flags


def _units(con: duckdb.DuckDBPyConnection, variables: list[_Variable]) -> dict[str, str | None]:
    """Each variable's unit: the task's, else its most common unit among in-window values."""
    common = dict(
        con.execute(
            """SELECT variable, mode(unit) FROM placed
            WHERE value IS NOT NULL AND nullif(trim(unit), '') IS NOT NULL GROUP BY variable"""
        ).fetchall()
    )
    return {v.name: v.unit if v.unit is not None else common.get(v.name) for v in variables}


def _keep(
    con: duckdb.DuckDBPyConnection, variables: list[_Variable], units: dict[str, str | None]
) -> Counter:
    """Store the usable in-window values in ``kept``; count the others by reason and variable."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE task_rules (variable VARCHAR, unit VARCHAR, low DOUBLE, high DOUBLE)"
    )
    con.executemany(
        "INSERT INTO task_rules VALUES (?, ?, ?, ?)",
        [(v.name, units[v.name], v.low, v.high) for v in variables],
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE judged AS
        SELECT p.*, CASE
            WHEN p.value IS NULL OR isnan(p.value) OR isinf(p.value) THEN 'value without a number'
            WHEN r.unit IS NOT NULL AND nullif(trim(p.unit), '') IS NOT NULL
                 AND lower(trim(p.unit)) <> lower(trim(r.unit)) THEN 'value in another unit than its variable''s'
            WHEN (r.low IS NOT NULL AND p.value < r.low) OR (r.high IS NOT NULL AND p.value > r.high)
                THEN 'implausible value (outside the variable''s range)'
            ELSE NULL END AS flag
        FROM placed p JOIN task_rules r USING (variable)"""
    )
    flags: Counter = Counter()
    for reason, variable, count in con.execute(
        "SELECT flag, variable, count(*) FROM judged WHERE flag IS NOT NULL GROUP BY ALL"
    ).fetchall():
        flags[(reason, variable)] += count
    con.execute(
        "CREATE OR REPLACE TEMP TABLE kept AS SELECT row_id, variable, value, hours FROM judged WHERE flag IS NULL"
    )
    for variable, count in con.execute("SELECT variable, count(*) FROM kept GROUP BY ALL").fetchall():
        flags[("kept", variable)] += count
    return flags


def _latest(con: duckdb.DuckDBPyConnection, names: list[str]) -> dict[str, dict[str, float]]:
    """row_id -> {variable: its last kept value in the window} for the tabular variables."""
    latest: dict[str, dict[str, float]] = {}
    if not names:
        return latest
    result = con.execute(
        "SELECT row_id, variable, arg_max(value, hours) FROM kept WHERE list_contains(?::VARCHAR[], variable) GROUP BY ALL",
        [names],
    )
    for row_id, variable, value in _batches(result):
        latest.setdefault(row_id, {})[variable] = value
    return latest


def _channels(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute("SELECT DISTINCT variable FROM series_values").fetchall()]


def _write_series(con: duckdb.DuckDBPyConnection, out: Path, names: list[str]) -> dict[str, str]:
    """Write one sensor file per row with kept values; row_id -> its path relative to ``out``.

    Values of one variable at the same time are averaged. Rows stream from DuckDB in order, so only
    one row's series is in memory at a time.
    """
    con.execute(
        """CREATE OR REPLACE TEMP TABLE series_values AS
        SELECT row_id, hours, variable, avg(value) AS value FROM kept
        WHERE list_contains(?::VARCHAR[], variable) GROUP BY ALL""",
        [names],
    )
    folder = out / SERIES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    current, samples = None, []
    result = con.execute("SELECT row_id, hours, variable, value FROM series_values ORDER BY row_id, hours")
    for row_id, hours, variable, value in _batches(result):
        if row_id != current:
            if current is not None:
                paths[current] = _write_one_series(folder, current, samples)
            current, samples = row_id, []
        samples.append((hours, variable, value))
    if current is not None:
        paths[current] = _write_one_series(folder, current, samples)
    return paths


def _write_one_series(folder: Path, row_id: str, samples: list[tuple[float, str, float]]) -> str:
    channels = sorted({variable for _, variable, _ in samples})
    by_time: dict[float, dict[str, float]] = {}
    for hours, variable, value in samples:
        by_time.setdefault(hours, {})[variable] = value
    path = folder / f"{safe_name(row_id)}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([TIME_COLUMN, *channels])
        for hours in sorted(by_time):
            values = by_time[hours]
            writer.writerow([_number(hours), *(_number(values[c]) if c in values else "" for c in channels)])
    return f"{SERIES_DIR}/{path.name}"


def _write_notes(con: duckdb.DuckDBPyConnection, source: SourceData, out: Path) -> dict[str, str]:
    """Write the in-window notes of each row, oldest first, as ``notes/ROW.txt``."""
    result = con.execute(
        f"""SELECT r.row_id, n.text FROM ({source.notes_sql}) n JOIN task_rows r ON r.subject = n.subject
        WHERE n.time >= r.window_start AND n.time < r.window_end AND nullif(trim(n.text), '') IS NOT NULL
        ORDER BY r.row_id, n.time"""
    )
    folder = out / NOTES_DIR
    paths: dict[str, list[str]] = {}
    for row_id, text in _batches(result):
        paths.setdefault(row_id, []).append(text.strip())
    written = {}
    for row_id, texts in paths.items():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_name(row_id)}.txt"
        path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        written[row_id] = f"{NOTES_DIR}/{path.name}"
    return written


def _latest_images(con: duckdb.DuckDBPyConnection, source: SourceData, flags: Counter) -> dict[str, str]:
    """row_id -> the absolute path of its latest in-window image that exists on disk."""
    result = con.execute(
        f"""SELECT r.row_id, arg_max(i.path, i.time) FROM ({source.images_sql}) i
        JOIN task_rows r ON r.subject = i.subject
        WHERE i.time >= r.window_start AND i.time < r.window_end GROUP BY r.row_id"""
    )
    images = {}
    for row_id, path in _batches(result):
        if Path(path).is_file():
            images[row_id] = str(Path(path).resolve())
        else:
            flags[("image listed in the source but absent on disk", "(images)")] += 1
    later = con.execute(
        f"""SELECT count(*) FROM ({source.images_sql}) i JOIN task_rows r ON r.subject = i.subject
        WHERE i.time >= r.window_end"""
    ).fetchone()[0]
    flags[("image after a row's observation window (left out: no leakage)", "(images)")] += later
    return images


def _place_files(
    out: Path, written: dict[str, dict[str, str]], images: dict[str, str]
) -> tuple[str | None, dict[str, dict[str, str]]]:
    """The cohort's data root and every file cell relative to it.

    Files written by the import live under ``out``; images stay where the source keeps them. With
    images the data root is the folder holding both, so that every cell is a relative path under it.
    """
    if not images:
        return None, written
    out = out.resolve()
    root = Path(os.path.commonpath([out, *{Path(path).parent for path in images.values()}]))
    prefix = out.relative_to(root)
    placed = {
        column: {row_id: (prefix / path).as_posix() for row_id, path in paths.items()}
        for column, paths in written.items()
    }
    placed["image_path"] = {
        row_id: Path(path).relative_to(root).as_posix() for row_id, path in images.items()
    }
    return str(root), placed


def _table(
    con: duckdb.DuckDBPyConnection,
    source: SourceData,
    task: TaskSpec,
    static: list[str],
    variables: list[_Variable],
    latest: dict[str, dict[str, float]],
    files: dict[str, dict[str, str]],
) -> tuple[list[str], list[dict[str, str]]]:
    outcome = task.outcome.column
    extra = [c for c in source.subgroups if c not in static]
    names = ["row_id", "group_id", "outcome", *static, *extra]
    selected = ", ".join(f'"{c}"' for c in names)
    result = con.execute(f"SELECT {selected} FROM task_rows ORDER BY group_id, index_time, row_id")
    tabular = [v.name for v in variables if v.tabular]
    rows = []
    for values in _batches(result):
        record = dict(zip(names, values, strict=True))
        row_id = record["row_id"]
        row = {
            source.id_column: row_id,
            source.group_column: record["group_id"],
            outcome: "" if record["outcome"] is None else str(int(record["outcome"])),
            **{c: _cell(record[c]) for c in [*static, *extra]},
            **{name: _number(value) for name, value in latest.get(row_id, {}).items()},
            **{column: paths.get(row_id, "") for column, paths in files.items()},
        }
        rows.append(row)
    columns = [source.id_column]
    if source.group_column != source.id_column:
        columns.append(source.group_column)
    columns += [outcome, *static, *extra, *tabular, "series_path"]
    columns += [column for column in ("notes_path", "image_path") if files.get(column)]
    return columns, rows


def _spec(
    source: SourceData,
    task: TaskSpec,
    name: str,
    static: list[str],
    tabular: list[str],
    channels: list[str],
    files: dict[str, dict[str, str]],
) -> dict[str, object]:
    modalities: dict[str, object] = {}
    if static:
        modalities["demographics"] = {
            "kind": "tabular",
            "numeric": [c for c in static if c in source.numeric],
            "categorical": [c for c in static if c in source.categorical],
        }
    if tabular:
        modalities["latest"] = {"kind": "tabular", "numeric": tabular}
    if channels:
        modalities["series"] = {
            "kind": "sensor",
            "column": "series_path",
            "channels": channels,
            "period_s": task.period_h * 3600,
            "time_column": TIME_COLUMN,
            "time_unit": "h",
            "duration_s": (task.window.end_h - min(task.window.start_h, 0.0)) * 3600,
        }
    if files.get("notes_path"):
        modalities["notes"] = {"kind": "text", "column": "notes_path"}
    if files.get("image_path"):
        modalities["image"] = {"kind": "image", "column": "image_path"}
    if not modalities:
        raise ValueError(f"task {task.name!r}: no variable has a value in any row's window; nothing to write")
    spec: dict[str, object] = {
        "name": name,
        "description": source.description,
        "id": source.id_column,
        "outcome": {"column": task.outcome.column, "task": "binary", "positive": 1},
        "modalities": modalities,
        "subgroups": list(source.subgroups),
    }
    if source.group_column != source.id_column:
        spec["split"] = {"group": source.group_column}
    return spec


def _write_catalogue(
    out: Path, variables: list[_Variable], units: dict[str, str | None], flags: Counter
) -> None:
    """``variables.csv``: each variable's codes, modalities, unit, range and what became of its values."""
    reasons = sorted({reason for reason, variable in flags if reason != "kept" and variable != "(images)"})
    with (out / CATALOGUE).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["variable", "codes", "to", "unit", "low", "high", "kept", *reasons])
        for v in variables:
            writer.writerow(
                [
                    v.name,
                    " ".join(v.codes),
                    "+".join(m for m, on in (("tabular", v.tabular), ("sensor", v.sensor)) if on),
                    units[v.name] or "",
                    "" if v.low is None else _number(v.low),
                    "" if v.high is None else _number(v.high),
                    flags[("kept", v.name)],
                    *(flags[(reason, v.name)] for reason in reasons),
                ]
            )


def _batches(result: duckdb.DuckDBPyConnection) -> Iterator[tuple]:
    while True:
        chunk = result.fetchmany(FETCH_ROWS)
        if not chunk:
            return
        yield from chunk


def safe_name(row_id: str) -> str:
    """A file name for a row id: letters, digits, ``_``, ``.`` and ``-`` kept, anything else ``_``."""
    return _UNSAFE.sub("_", str(row_id))[:120] or "_"


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _sql_text(text: str) -> str:
    """``text`` for a single-quoted SQL literal."""
    return text.replace("'", "''")
