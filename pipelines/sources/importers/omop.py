"""OMOP CDM 5.x: a folder of CSV tables to a cohort of visits, through a declarative task.

Layout of ``SRC``: the CDM tables as ``PERSON.csv``, ``VISIT_OCCURRENCE.csv``, ``MEASUREMENT.csv``,
``OBSERVATION.csv``, ``DEATH.csv``, ``NOTE.csv``, ``CONDITION_OCCURRENCE.csv`` and the vocabulary's
``CONCEPT.csv`` (upper- or lower-case names, ``.csv`` or ``.csv.gz``). Visits are rows (split by
``person_id``), MEASUREMENT and OBSERVATION numeric values are the events (codes: concept ids),
NOTE text is the text modality, DEATH the outcome. Concept ids are named from CONCEPT.csv, so that
columns and channels read as clinical names. An event whose concept id is not in CONCEPT.csv is
skipped and counted, and the first one is named by file and record id.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from pipelines.sources.importers._common import ImportResult, require_folder
from pipelines.sources.importers.database import export_tables, is_database_url, shown_url
from pipelines.sources.importers.task_engine import (
    AGE_BAND_SQL,
    EventTable,
    SourceData,
    build_cohort,
    connect,
    csv_source,
    missing_columns,
    read_task,
    reads_tables,
    skip_unreadable,
)

LAYOUT = "an OMOP CDM 5.x folder of CSV tables (PERSON.csv, VISIT_OCCURRENCE.csv, CONCEPT.csv, ...)"
DEFAULT_TASK = Path(__file__).parent / "tasks" / "omop.yaml"
NUMERIC = ["age"]
CATEGORICAL = ["gender", "race", "ethnicity", "visit_type"]
CORE = {
    "PERSON": ["person_id", "gender_concept_id", "year_of_birth", "race_concept_id", "ethnicity_concept_id"],
    "VISIT_OCCURRENCE": ["visit_occurrence_id", "person_id", "visit_concept_id", "visit_start_date"],
    "CONCEPT": ["concept_id", "concept_name"],
}
# table -> (record id, concept id, date, datetime, value, unit)
EVENTS = {
    "MEASUREMENT": (
        "measurement_id",
        "measurement_concept_id",
        "measurement_date",
        "measurement_datetime",
        "value_as_number",
        "unit_source_value",
    ),
    "OBSERVATION": (
        "observation_id",
        "observation_concept_id",
        "observation_date",
        "observation_datetime",
        "value_as_number",
        "unit_source_value",
    ),
}


TABLES = (
    "PERSON",
    "VISIT_OCCURRENCE",
    "VISIT_DETAIL",
    "MEASUREMENT",
    "OBSERVATION",
    "CONDITION_OCCURRENCE",
    "DEATH",
    "NOTE",
    "CONCEPT",
)
"""The CDM tables the importer reads (copied out of a database given by URL)."""


def import_omop(
    src: str | Path, out: str | Path, *, task: str | Path | None = None, schema: str | None = None
) -> ImportResult:
    """Import an OMOP CDM from a folder of CSV tables or from a database URL.

    A SQLAlchemy URL (``postgresql://user@host/cdm``, ``sqlite:///cdm.db``) is read table by table
    in chunks into a temporary folder (``schema`` names the CDM schema when it is not the default),
    and that folder is imported like any other; see :func:`import_omop_folder`.

    Raises:
        ValueError: as :func:`import_omop_folder`, or the database cannot be read.
    """
    if not is_database_url(src):
        return import_omop_folder(src, out, task=task)
    with tempfile.TemporaryDirectory(prefix="omop-tables-") as folder:
        written = export_tables(str(src), Path(folder), TABLES, schema)
        if not written:
            raise ValueError(
                f"{shown_url(str(src))}: expected OMOP CDM tables ({', '.join(TABLES)}); found none"
            )
        return import_omop_folder(folder, out, task=task)


@reads_tables
def import_omop_folder(src: str | Path, out: str | Path, *, task: str | Path | None = None) -> ImportResult:
    """Write a cohort of OMOP visits: one row per visit, split by ``person_id``.

    Table columns: ``visit_occurrence_id``, ``person_id`` (the split group), the outcome (default
    ``died_365d``: a DEATH record within 365 days of the visit's start), the task's static columns
    (age at the visit, gender, race, ethnicity, visit type, named from CONCEPT.csv or the source
    values), ``age_band``, the latest in-window value of each tabular concept, ``series_path`` and,
    when NOTE has text in the window, ``notes_path``.

    Raises:
        ValueError: ``src`` is not an OMOP folder, a core table (PERSON, VISIT_OCCURRENCE, CONCEPT)
            is absent or lacks a column, or the task is invalid.
    """
    src = require_folder(Path(src), LAYOUT)
    spec = read_task(task or DEFAULT_TASK)
    if spec.source != "omop":
        raise ValueError(f"{task}: expected a task with source: omop, got source: {spec.source}")
    if spec.index.kind != "visit":
        raise ValueError(f"task {spec.name!r}: an OMOP task indexes visits (index.kind: visit)")
    con = connect()
    core = {}
    for table, columns in CORE.items():
        path = _table_path(src, table)
        if path is None:
            raise ValueError(f"{src}: expected {LAYOUT}, but {table}.csv is absent")
        lacking = missing_columns(con, path, columns)
        if lacking:
            raise ValueError(f"{path}: expected the OMOP CDM columns {', '.join(lacking)} in its header line")
        core[table] = csv_source(path)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE omop_concepts AS
        SELECT DISTINCT ON (trim(concept_id)) trim(concept_id) AS concept_id, concept_name FROM {core["CONCEPT"]}"""
    )
    codes = sorted({code for variable in spec.variables for code in variable.codes})
    names = dict(
        con.execute(
            "SELECT concept_id, concept_name FROM omop_concepts WHERE list_contains(?, concept_id)", [codes]
        ).fetchall()
    )
    source = SourceData(
        con=con,
        rows_sql="",
        id_column="visit_occurrence_id",
        group_column="person_id",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        subgroups=["gender", "age_band"],
        events=[],
        notes_sql=None,
        code_names=names,
        description=f"{spec.description or spec.name} Imported from OMOP CDM with deepwe import omop.",
    )
    source.rows_sql = _rows_sql(src, core, spec)
    for table, columns in EVENTS.items():
        try:
            event = _events(con, src, table, columns, source)
        except duckdb.Error as error:
            skip_unreadable(source, table, error)
            continue
        if event is not None:
            source.events.append(event)
    source.notes_sql = _notes_sql(con, src, source)
    persons = con.execute(f"SELECT count(DISTINCT trim(person_id)) FROM {core['PERSON']}").fetchone()[0]
    source.notes.insert(0, f"{persons} persons in PERSON")
    return build_cohort(source, spec, Path(out), name=spec.name)


def _table_path(src: Path, table: str) -> Path | None:
    for name in (table, table.lower()):
        for suffix in (".csv", ".csv.gz"):
            path = src / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def _when(date: str, datetime: str | None, alias: str = "") -> str:
    """The event time: its datetime when readable, else its date at midnight."""
    moment = f"TRY_CAST({alias}{date} AS TIMESTAMP)"
    return f"coalesce(TRY_CAST({alias}{datetime} AS TIMESTAMP), {moment})" if datetime else moment


def _rows_sql(src: Path, core: dict[str, str], spec) -> str:
    start = _when("visit_start_date", "visit_start_datetime", "v.")
    where = f"{start} IS NOT NULL"
    if spec.index.classes:
        quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in spec.index.classes)
        where += f" AND trim(v.visit_concept_id) IN ({quoted})"
    horizon = (
        ""
        if spec.outcome.within_days is None
        else f" AND {{time}} <= {start} + to_milliseconds({round(spec.outcome.within_days * 86_400_000)})"
    )
    if spec.outcome.kind == "death":
        death_path = _table_path(src, "DEATH")
        if death_path is None:
            outcome = "0"
        else:
            death = _when("death_date", "death_datetime", "d.")
            # DEATH often holds a date only: a death on the visit's day counts.
            outcome = f"""CASE WHEN EXISTS (SELECT 1 FROM {csv_source(death_path)} d
                WHERE trim(d.person_id) = trim(v.person_id) AND {death} >= date_trunc('day', {start})
                {horizon.format(time=death)}) THEN 1 ELSE 0 END"""
    elif spec.outcome.kind == "condition":
        path = _table_path(src, "CONDITION_OCCURRENCE")
        if path is None:
            raise ValueError(f"{src}: a condition outcome needs CONDITION_OCCURRENCE.csv, which is absent")
        onset = _when("condition_start_date", "condition_start_datetime", "c.")
        codes = ", ".join("'" + c.replace("'", "''") + "'" for c in spec.outcome.codes)
        outcome = f"""CASE WHEN EXISTS (SELECT 1 FROM {csv_source(path)} c
            WHERE trim(c.person_id) = trim(v.person_id) AND trim(c.condition_concept_id) IN ({codes})
            AND {onset} > {start}{horizon.format(time=onset)}) THEN 1 ELSE 0 END"""
    else:
        raise ValueError(
            f"task {spec.name!r}: outcome kind {spec.outcome.kind!r} is not offered by the OMOP importer; "
            "use death or condition"
        )
    age = f"(year({start}) - TRY_CAST(p.year_of_birth AS INTEGER))"
    rows = f"""SELECT trim(v.visit_occurrence_id) AS row_id, trim(v.person_id) AS group_id,
            trim(v.person_id) AS subject, {start} AS index_time, {outcome} AS outcome,
            {age} AS age, {AGE_BAND_SQL.format(age=age)} AS age_band,
            coalesce(g.concept_name, p.gender_source_value) AS gender,
            coalesce(r.concept_name, p.race_source_value) AS race,
            coalesce(e.concept_name, p.ethnicity_source_value) AS ethnicity,
            coalesce(t.concept_name, v.visit_concept_id) AS visit_type
        FROM {core["VISIT_OCCURRENCE"]} v
        JOIN {core["PERSON"]} p ON trim(p.person_id) = trim(v.person_id)
        LEFT JOIN omop_concepts g ON g.concept_id = trim(p.gender_concept_id)
        LEFT JOIN omop_concepts r ON r.concept_id = trim(p.race_concept_id)
        LEFT JOIN omop_concepts e ON e.concept_id = trim(p.ethnicity_concept_id)
        LEFT JOIN omop_concepts t ON t.concept_id = trim(v.visit_concept_id)
        WHERE {where}"""
    if spec.index.which != "each":
        order = "ASC" if spec.index.which == "first" else "DESC"
        rows = f"""SELECT * EXCLUDE (rank) FROM (SELECT *, row_number() OVER
            (PARTITION BY group_id ORDER BY index_time {order}, row_id) AS rank FROM ({rows})) WHERE rank = 1"""
    return rows


def _events(con, src: Path, table: str, columns: tuple[str, ...], source: SourceData) -> EventTable | None:
    """An event table over the rows whose concept CONCEPT.csv knows; the others counted and named."""
    path = _table_path(src, table)
    if path is None:
        source.notes.append(f"{table}.csv is absent: its events are not imported")
        return None
    record, concept, date, datetime, value, unit = columns
    lacking = missing_columns(con, path, ["person_id", record, concept, date, value])
    if lacking:
        rows = con.execute(f"SELECT count(*) FROM {csv_source(path)}").fetchone()[0]
        source.notes.append(
            f"{path}: expected the columns {', '.join(lacking)} in its header line; its {rows} records were skipped"
        )
        source.skipped[f"record of an event table with a missing column ({table})"] += rows
        return None
    header = set(missing_columns(con, path, [datetime, unit]))
    when = _when(date, None if datetime in header else datetime)
    unit_sql = "NULL" if unit in header else unit
    unknown, first = con.execute(
        f"""SELECT count(*), min_by({record}, TRY_CAST({record} AS BIGINT)) FROM {csv_source(path)} x
        WHERE trim({concept}) NOT IN (SELECT concept_id FROM omop_concepts)"""
    ).fetchone()
    if unknown:
        source.skipped[f"record whose concept id is not in CONCEPT.csv ({table})"] += unknown
        source.notes.append(
            f"{path}, {record} {first}: expected a {concept} listed in CONCEPT.csv; "
            f"{unknown} such record(s) skipped"
        )
    return EventTable(
        name=table,
        sql=f"""SELECT trim(person_id) AS subject, {when} AS time, trim({concept}) AS code,
            TRY_CAST({value} AS DOUBLE) AS value, {unit_sql} AS unit
            FROM {csv_source(path)} WHERE trim({concept}) IN (SELECT concept_id FROM omop_concepts)""",
    )


def _notes_sql(con, src: Path, source: SourceData) -> str | None:
    path = _table_path(src, "NOTE")
    if path is None or missing_columns(con, path, ["person_id", "note_date", "note_text"]):
        source.notes.append("NOTE.csv is absent or lacks note_text: no text modality")
        return None
    if not con.execute(f"SELECT count(*) FROM {csv_source(path)}").fetchone()[0]:
        source.notes.append("NOTE.csv has no rows: no text modality")
        return None
    datetime = None if missing_columns(con, path, ["note_datetime"]) else "note_datetime"
    return f"""SELECT trim(person_id) AS subject, {_when("note_date", datetime)} AS time, note_text AS text
        FROM {csv_source(path)}"""
