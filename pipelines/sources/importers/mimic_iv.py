"""MIMIC-IV (the full database or its demo): ICU stays as rows, through a declarative task.

Layout of ``SRC``: ``hosp/`` (patients, admissions, labevents, d_labitems), ``icu/`` (icustays,
inputevents, outputevents, chartevents, d_items) and, when present, ``note/`` (MIMIC-IV-Note:
discharge, radiology), each table as ``.csv.gz`` or ``.csv``. With ``cxr``, a MIMIC-CXR-JPG folder
(``mimic-cxr-2.0.0-metadata.csv.gz`` and ``files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg``) adds each stay's
latest chest X-ray taken in the window as an image modality; the images stay where they are. Files are read as streams by DuckDB,
never loaded whole. Event times: labevents and chartevents ``charttime``, outputevents
``charttime``, inputevents ``endtime`` (an infusion's amount is known only when it ends, so a
infusion that runs past the window stays out of it).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.sources.importers._common import ImportResult, require_folder
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

LAYOUT = "a MIMIC-IV folder with hosp/ and icu/ (tables as .csv.gz or .csv)"
DEFAULT_TASK = Path(__file__).parent / "tasks" / "mimic-iv.yaml"
NUMERIC = ["age"]
CATEGORICAL = [
    "gender",
    "admission_type",
    "admission_location",
    "insurance",
    "language",
    "marital_status",
    "race",
    "first_careunit",
]
CORE = {
    "hosp/patients": ["subject_id", "gender", "anchor_age", "anchor_year", "dod"],
    "hosp/admissions": [
        "subject_id",
        "hadm_id",
        "admittime",
        "deathtime",
        "admission_type",
        "admission_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "hospital_expire_flag",
    ],
    "icu/icustays": ["subject_id", "hadm_id", "stay_id", "first_careunit", "intime"],
}
# table -> (time column, value column, unit column)
EVENTS = {
    "hosp/labevents": ("charttime", "valuenum", "valueuom"),
    "icu/chartevents": ("charttime", "valuenum", "valueuom"),
    "icu/outputevents": ("charttime", "value", "valueuom"),
    "icu/inputevents": ("endtime", "amount", "amountuom"),
}
NOTES = ("note/discharge", "note/radiology")


@reads_tables
def import_mimic_iv(
    src: str | Path, out: str | Path, *, task: str | Path | None = None, cxr: str | Path | None = None
) -> ImportResult:
    """Write a cohort of MIMIC-IV ICU stays: one row per stay, split by ``subject_id``.

    Table columns: ``stay_id``, ``subject_id`` (the split group), the outcome (default
    ``hospital_death``: the admission's ``hospital_expire_flag``), the task's static columns (age at
    ICU admission, gender, admission type and location, insurance, first care unit), ``age_band``,
    the latest in-window value of each tabular variable, ``series_path`` (``series/STAY.csv``) and,
    with MIMIC-IV-Note, ``notes_path`` and, with ``cxr``, ``image_path``. A missing event table (the demo has no chartevents) or one
    lacking a column is said in the summary and the import goes on without it.

    Raises:
        ValueError: ``src`` is not laid out as MIMIC-IV, a core table (patients, admissions,
            icustays) is absent or lacks a column, or the task is invalid.
    """
    src = require_folder(Path(src), LAYOUT)
    spec = read_task(task or DEFAULT_TASK)
    if spec.source != "mimic-iv":
        raise ValueError(f"{task}: expected a task with source: mimic-iv, got source: {spec.source}")
    con = connect()
    core = {}
    for table, columns in CORE.items():
        path = _table_path(src, table)
        if path is None:
            raise ValueError(f"{src}: expected {LAYOUT}, but {table}.csv.gz is absent")
        lacking = missing_columns(con, path, columns)
        if lacking:
            raise ValueError(f"{path}: expected the MIMIC-IV columns {', '.join(lacking)} in its header line")
        core[table] = csv_source(path)
    source = SourceData(
        con=con,
        rows_sql="",
        id_column="stay_id",
        group_column="subject_id",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        subgroups=["gender", "age_band"],
        events=[],
        notes_sql=None,
        code_names=_code_names(con, src),
        description=(
            f"{spec.description or spec.name} MIMIC-IV, ODbL 1.0; Johnson et al., Sci Data 2023. "
            "Imported with deepwe import mimic-iv."
        ),
    )
    source.rows_sql = _rows_sql(con, core, spec, source)
    for table, columns in EVENTS.items():
        try:
            event = _event_table(con, src, table, columns, source)
        except duckdb.Error as error:
            skip_unreadable(source, table, error)
            continue
        if event is not None:
            source.events.append(event)
    source.notes_sql = _notes_sql(con, src, source)
    if cxr is not None:
        source.images_sql = _images_sql(con, Path(cxr), source)
    return build_cohort(source, spec, Path(out), name=spec.name)


def _event_table(
    con, src: Path, table: str, columns: tuple[str, str, str], source: SourceData
) -> EventTable | None:
    """One MIMIC-IV event table as ``subject, time, code, value, unit``; None (said in the summary)
    when it is absent or lacks a column."""
    time, value, unit = columns
    path = _table_path(src, table)
    if path is None:
        vitals = " (no bedside vitals; the series holds labs, outputs and inputs)" if "chart" in table else ""
        source.notes.append(f"{table}.csv.gz is absent: its events are not imported{vitals}")
        return None
    lacking = missing_columns(con, path, ["subject_id", "itemid", time, value, unit])
    if lacking:
        rows = con.execute(f"SELECT count(*) FROM {csv_source(path)}").fetchone()[0]
        source.notes.append(
            f"{path}: expected the columns {', '.join(lacking)} in its header line; the table's "
            f"{rows} records were skipped"
        )
        source.skipped[f"record of an event table with a missing column ({table})"] += rows
        return None
    return EventTable(
        name=table,
        sql=f"""SELECT subject_id AS subject, TRY_CAST({time} AS TIMESTAMP) AS time,
            trim(itemid) AS code, TRY_CAST({value} AS DOUBLE) AS value, {unit} AS unit
            FROM {csv_source(path)}""",
    )


def _table_path(src: Path, table: str) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        path = src / f"{table}{suffix}"
        if path.is_file():
            return path
    return None


def _rows_sql(con, core: dict[str, str], spec, source: SourceData) -> str:
    """One row per ICU stay; stays without a readable intime or admission are counted and left out."""
    if spec.index.kind != "icu_stay":
        raise ValueError(f"task {spec.name!r}: a MIMIC-IV task indexes ICU stays (index.kind: icu_stay)")
    if spec.outcome.kind == "in_hospital_death":
        died = "TRY_CAST(a.hospital_expire_flag AS INTEGER)"
        if spec.outcome.within_days is not None:
            died = (
                f"CASE WHEN {died} = 1 AND TRY_CAST(a.deathtime AS TIMESTAMP) <= TRY_CAST(i.intime AS TIMESTAMP) "
                f"+ to_milliseconds({round(spec.outcome.within_days * 86_400_000)}) THEN 1 ELSE {died} * 0 END"
            )
    elif spec.outcome.kind == "death":
        death = "coalesce(TRY_CAST(a.deathtime AS TIMESTAMP), TRY_CAST(p.dod AS TIMESTAMP))"
        horizon = (
            ""
            if spec.outcome.within_days is None
            else f" AND {death} <= TRY_CAST(i.intime AS TIMESTAMP) + "
            f"to_milliseconds({round(spec.outcome.within_days * 86_400_000)})"
        )
        # dod is a date: a death on the day of ICU admission counts.
        died = f"CASE WHEN {death} >= date_trunc('day', TRY_CAST(i.intime AS TIMESTAMP)){horizon} THEN 1 ELSE 0 END"
    else:
        raise ValueError(
            f"task {spec.name!r}: outcome kind {spec.outcome.kind!r} is not offered by the MIMIC-IV "
            "importer; use in_hospital_death or death"
        )
    joined = f"""
        FROM {core["icu/icustays"]} i
        LEFT JOIN {core["hosp/admissions"]} a ON a.hadm_id = i.hadm_id AND a.subject_id = i.subject_id
        LEFT JOIN {core["hosp/patients"]} p ON p.subject_id = i.subject_id"""
    bad_time, no_admission = con.execute(
        f"""SELECT count(*) FILTER (WHERE TRY_CAST(i.intime AS TIMESTAMP) IS NULL),
                   count(*) FILTER (WHERE a.hadm_id IS NULL) {joined}"""
    ).fetchone()
    source.skipped["ICU stay without a readable intime (icu/icustays)"] += bad_time
    source.skipped["ICU stay whose admission is not in hosp/admissions"] += no_admission
    age = "(TRY_CAST(p.anchor_age AS INTEGER) + year(TRY_CAST(i.intime AS TIMESTAMP)) - TRY_CAST(p.anchor_year AS INTEGER))"
    rows = f"""
        SELECT trim(i.stay_id) AS row_id, trim(i.subject_id) AS group_id, trim(i.subject_id) AS subject,
               TRY_CAST(i.intime AS TIMESTAMP) AS index_time, {died} AS outcome,
               {age} AS age, {AGE_BAND_SQL.format(age=age)} AS age_band,
               p.gender, a.admission_type, a.admission_location, a.insurance, a.language,
               a.marital_status, a.race, i.first_careunit
        {joined}
        WHERE TRY_CAST(i.intime AS TIMESTAMP) IS NOT NULL AND a.hadm_id IS NOT NULL"""
    if spec.index.classes:
        units = ", ".join(f"'{c.replace(chr(39), chr(39) * 2)}'" for c in spec.index.classes)
        rows += f" AND i.first_careunit IN ({units})"
    if spec.index.which != "each":
        order = "ASC" if spec.index.which == "first" else "DESC"
        rows = f"""SELECT * EXCLUDE (rank) FROM (SELECT *, row_number() OVER
            (PARTITION BY group_id ORDER BY index_time {order}) AS rank FROM ({rows})) WHERE rank = 1"""
    return rows


def _code_names(con, src: Path) -> dict[str, str]:
    """itemid -> label, from hosp/d_labitems and icu/d_items when present."""
    names: dict[str, str] = {}
    for table in ("hosp/d_labitems", "icu/d_items"):
        path = _table_path(src, table)
        if path is None or missing_columns(con, path, ["itemid", "label"]):
            continue
        names.update(con.execute(f"SELECT trim(itemid), label FROM {csv_source(path)}").fetchall())
    return names


def _notes_sql(con, src: Path, source: SourceData) -> str | None:
    """MIMIC-IV-Note tables as (subject, time, text); None when the note/ folder is absent."""
    parts = []
    for table in NOTES:
        path = _table_path(src, table)
        if path is None:
            continue
        lacking = missing_columns(con, path, ["subject_id", "charttime", "text"])
        if lacking:
            source.notes.append(f"{path}: expected the columns {', '.join(lacking)}; its notes were skipped")
            continue
        parts.append(
            f"SELECT subject_id AS subject, TRY_CAST(charttime AS TIMESTAMP) AS time, text FROM {csv_source(path)}"
        )
    if not parts:
        source.notes.append("no note/ folder (MIMIC-IV-Note): no text modality")
        return None
    return " UNION ALL ".join(parts)


CXR_METADATA = "mimic-cxr-2.0.0-metadata"
CXR_LAYOUT = f"a MIMIC-CXR-JPG folder with {CXR_METADATA}.csv.gz and files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg"


def _images_sql(con, cxr: Path, source: SourceData) -> str:
    """MIMIC-CXR-JPG images as (subject, time, absolute path), timed by StudyDate and StudyTime."""
    cxr = require_folder(cxr, CXR_LAYOUT)
    path = _table_path(cxr, CXR_METADATA)
    if path is None:
        raise ValueError(f"{cxr}: expected {CXR_LAYOUT}, but {CXR_METADATA}.csv.gz is absent")
    lacking = missing_columns(con, path, ["dicom_id", "subject_id", "study_id", "StudyDate", "StudyTime"])
    if lacking:
        raise ValueError(f"{path}: expected the MIMIC-CXR columns {', '.join(lacking)} in its header line")
    root = str(cxr).replace("'", "''")
    time = (
        "try_strptime(trim(StudyDate) || lpad(split_part(trim(StudyTime), '.', 1), 6, '0'), '%Y%m%d%H%M%S')"
    )
    unreadable = con.execute(f"SELECT count(*) FROM {csv_source(path)} WHERE {time} IS NULL").fetchone()[0]
    source.skipped[f"image without a readable StudyDate and StudyTime ({CXR_METADATA})"] += unreadable
    return f"""SELECT trim(subject_id) AS subject, {time} AS time,
        '{root}/files/p' || left(trim(subject_id), 2) || '/p' || trim(subject_id) || '/s' || trim(study_id)
        || '/' || trim(dicom_id) || '.jpg' AS path
        FROM {csv_source(path)} WHERE {time} IS NOT NULL"""
