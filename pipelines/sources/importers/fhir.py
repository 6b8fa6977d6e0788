"""FHIR R4: a folder of Bundles (``.json``) or NDJSON exports to a cohort, through a declarative task.

Patients become rows (one per Patient, or one per index Encounter with ``index.which: each``); the
index time is the start of an Encounter (of the task's classes, never one that starts after the
patient's death); Observations are the events (LOINC code, ``valueQuantity`` value and unit,
components such as blood pressure's systolic and diastolic as their own codes); the outcome is death
(``Patient.deceasedDateTime``) or a Condition code after the index time. Resources are read as
plain JSON with checks of the fields used (see :mod:`pipelines.sources.importers.fhir_resources` for why).
A resource that fails a check is skipped and counted; the patient's other resources are kept.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from pipelines.sources.importers._common import ImportResult, require_folder
from pipelines.sources.importers.fhir_resources import (
    Located,
    ResourceError,
    coding,
    effective_time,
    instant,
    note_text,
    observation_values,
    read_resources,
    reference_id,
)
from pipelines.sources.importers.task_engine import (
    AGE_BAND_SQL,
    EventTable,
    SourceData,
    build_cohort,
    connect,
    read_task,
    reads_tables,
)

LAYOUT = "a folder of FHIR R4 Bundles (.json) or NDJSON files (.ndjson)"
DEFAULT_TASK = Path(__file__).parent / "tasks" / "fhir.yaml"
NUMERIC = ["age"]
CATEGORICAL = ["gender", "race", "ethnicity", "marital_status"]
FLUSH_ROWS = 50_000
_SCHEMAS = {
    "fhir_patients": [
        ("patient", pa.string()),
        ("birth", pa.timestamp("us")),
        ("death", pa.timestamp("us")),
        ("gender", pa.string()),
        ("race", pa.string()),
        ("ethnicity", pa.string()),
        ("marital_status", pa.string()),
    ],
    "fhir_encounters": [
        ("encounter", pa.string()),
        ("patient", pa.string()),
        ("start", pa.timestamp("us")),
        ("class", pa.string()),
    ],
    "fhir_events": [
        ("subject", pa.string()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
    ],
    "fhir_conditions": [("patient", pa.string()), ("onset", pa.timestamp("us")), ("code", pa.string())],
    "fhir_notes": [("subject", pa.string()), ("time", pa.timestamp("us")), ("text", pa.string())],
}


class _Tables:
    """Rows buffered per table and flushed into DuckDB in Arrow batches (memory stays bounded)."""

    def __init__(self, con) -> None:
        self.con = con
        self.rows: dict[str, list[tuple]] = {name: [] for name in _SCHEMAS}
        for name, fields in _SCHEMAS.items():
            columns = ", ".join(f"{field} {_duck_type(kind)}" for field, kind in fields)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")

    def add(self, name: str, row: tuple) -> None:
        self.rows[name].append(row)
        if len(self.rows[name]) >= FLUSH_ROWS:
            self.flush(name)

    def flush(self, name: str | None = None) -> None:
        for table in [name] if name else list(self.rows):
            rows = self.rows[table]
            if not rows:
                continue
            fields = _SCHEMAS[table]
            batch = pa.table(
                {field: [row[i] for row in rows] for i, (field, _) in enumerate(fields)},
                schema=pa.schema(fields),
            )
            self.con.register("fhir_batch", batch)
            self.con.execute(f"INSERT INTO {table} SELECT * FROM fhir_batch")
            self.con.unregister("fhir_batch")
            self.rows[table] = []


@reads_tables
def import_fhir(src: str | Path, out: str | Path, *, task: str | Path | None = None) -> ImportResult:
    """Write a cohort of FHIR Patients: by default one row per Patient, indexed at their last
    encounter, outcome death within 365 days.

    Table columns: ``patient_id`` (or ``encounter_id`` and ``patient_id``, the split group, with
    ``index.which: each``), the outcome, the task's static columns (age at the index time, gender,
    race, ethnicity, marital status), ``age_band``, the latest in-window value of each tabular LOINC
    variable and ``series_path``.

    Raises:
        ValueError: ``src`` is not a folder of FHIR files, none holds a Patient, or the task is invalid.
    """
    src = require_folder(Path(src), LAYOUT)
    spec = read_task(task or DEFAULT_TASK)
    if spec.source != "fhir":
        raise ValueError(f"{task}: expected a task with source: fhir, got source: {spec.source}")
    if spec.index.kind != "encounter":
        raise ValueError(f"task {spec.name!r}: a FHIR task indexes encounters (index.kind: encounter)")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".json", ".ndjson") and p.is_file())
    if not files:
        raise ValueError(f"{src}: expected {LAYOUT}, but found no .json or .ndjson file")
    con = connect()
    tables = _Tables(con)
    skipped: Counter[str] = Counter()
    first_fault: dict[str, str] = {}
    names: dict[str, str] = {}
    for path in files:
        try:
            for located in read_resources(path):
                try:
                    _add(located, tables, names)
                except ResourceError as error:
                    reason = f"{located.resource.get('resourceType') or 'entry'} skipped: {_reason(error)}"
                    skipped[reason] += 1
                    first_fault.setdefault(reason, str(error))
        except ResourceError as error:
            reason = "file that is not a FHIR Bundle or resource"
            skipped[reason] += 1
            first_fault.setdefault(reason, str(error))
    tables.flush()
    patients, deceased = con.execute("SELECT count(*), count(death) FROM fhir_patients").fetchone()
    if not patients:
        raise ValueError(f"{src}: expected {LAYOUT} holding Patient resources, but found none")
    source = SourceData(
        con=con,
        rows_sql=_rows_sql(spec),
        id_column="encounter_id" if spec.index.which == "each" else "patient_id",
        group_column="patient_id",
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        subgroups=["gender", "age_band"],
        events=[EventTable(name="Observation", sql="SELECT * FROM fhir_events")],
        notes_sql="SELECT * FROM fhir_notes"
        if con.execute("SELECT count(*) FROM fhir_notes").fetchone()[0]
        else None,
        code_names=names,
        description=f"{spec.description or spec.name} Imported from FHIR R4 with deepwe import fhir.",
        skipped=skipped,
    )
    source.notes.append(f"{patients} Patients read from {len(files)} files, {deceased} with deceasedDateTime")
    source.notes += [f"first {reason.split(':')[0]}: {message}" for reason, message in first_fault.items()]
    _count_unindexed(con, spec, source)
    return build_cohort(source, spec, Path(out), name=spec.name)


def _add(located: Located, tables: _Tables, names: dict[str, str]) -> None:
    r = located.resource
    kind = r.get("resourceType")
    if kind is None:
        raise located.fault("a resource in Bundle.entry.resource")
    if kind == "Patient":
        if not r.get("id"):
            raise located.fault("a Patient.id")
        death = (
            instant(located, r["deceasedDateTime"], "deceasedDateTime") if "deceasedDateTime" in r else None
        )
        birth = instant(located, r["birthDate"], "birthDate") if "birthDate" in r else None
        marital = coding(r.get("maritalStatus"))
        tables.add(
            "fhir_patients",
            (
                str(r["id"]),
                birth,
                death,
                r.get("gender"),
                _us_core(r, "us-core-race"),
                _us_core(r, "us-core-ethnicity"),
                marital[1] if marital else None,
            ),
        )
    elif kind == "Encounter":
        period = r.get("period") if isinstance(r.get("period"), dict) else {}
        start = instant(located, period.get("start"), "period.start")
        klass = r.get("class")
        if isinstance(klass, list):  # R5: a list of CodeableConcepts
            found = coding(klass[0]) if klass else None
            code = found[0] if found else None
        else:
            code = klass.get("code") if isinstance(klass, dict) else None
        tables.add("fhir_encounters", (str(r.get("id", "")), reference_id(located, "subject"), start, code))
    elif kind == "Observation":
        subject = reference_id(located, "subject")
        time = effective_time(located)
        for code, display, value, unit in observation_values(located):
            names.setdefault(code, display)
            tables.add("fhir_events", (subject, time, code, value, unit))
    elif kind == "Condition":
        subject = reference_id(located, "subject")
        if "onsetDateTime" in r:
            onset = instant(located, r["onsetDateTime"], "onsetDateTime")
        else:
            onset = instant(located, r.get("recordedDate"), "onsetDateTime or recordedDate")
        concept = r.get("code") if isinstance(r.get("code"), dict) else {}
        codes = [c.get("code") for c in concept.get("coding", []) if isinstance(c, dict) and c.get("code")]
        if not codes:
            raise located.fault("a Condition.code with a coding")
        for code in codes:
            tables.add("fhir_conditions", (subject, onset, str(code)))
    elif kind == "DocumentReference":
        text = note_text(located)
        if text:
            when = r.get("date") or (r.get("context", {}).get("period", {}) or {}).get("start")
            tables.add("fhir_notes", (reference_id(located, "subject"), instant(located, when, "date"), text))


def _rows_sql(spec) -> str:
    """Index encounters (of the task's classes, starting no later than the patient's death) as rows."""
    classes = ""
    if spec.index.classes:
        quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in spec.index.classes)
        classes = f" AND e.class IN ({quoted})"
    rank = "" if spec.index.which == "each" else ("ASC" if spec.index.which == "first" else "DESC")
    chosen = f"""SELECT e.encounter, e.patient, e.start FROM fhir_encounters e JOIN fhir_patients p USING (patient)
        WHERE e.start IS NOT NULL AND (p.death IS NULL OR e.start <= p.death){classes}"""
    if rank:
        chosen = f"""SELECT * EXCLUDE (rank) FROM (SELECT *, row_number() OVER
            (PARTITION BY patient ORDER BY start {rank}, encounter) AS rank FROM ({chosen})) WHERE rank = 1"""
    horizon = (
        ""
        if spec.outcome.within_days is None
        else f" AND {{time}} <= i.start + to_milliseconds({round(spec.outcome.within_days * 86_400_000)})"
    )
    if spec.outcome.kind == "death":
        outcome = f"CASE WHEN p.death IS NOT NULL AND p.death >= i.start{horizon.format(time='p.death')} THEN 1 ELSE 0 END"
    elif spec.outcome.kind == "condition":
        codes = ", ".join("'" + c.replace("'", "''") + "'" for c in spec.outcome.codes)
        outcome = f"""CASE WHEN EXISTS (SELECT 1 FROM fhir_conditions c WHERE c.patient = i.patient
            AND c.code IN ({codes}) AND c.onset > i.start{horizon.format(time="c.onset")}) THEN 1 ELSE 0 END"""
    else:
        raise ValueError(
            f"task {spec.name!r}: outcome kind {spec.outcome.kind!r} is not offered by the FHIR importer; "
            "use death or condition"
        )
    age = "floor(date_diff('day', p.birth, i.start) / 365.25)"
    row_id = "i.encounter" if spec.index.which == "each" else "i.patient"
    return f"""SELECT {row_id} AS row_id, i.patient AS group_id, i.patient AS subject, i.start AS index_time,
        {outcome} AS outcome, {age} AS age, {AGE_BAND_SQL.format(age=age)} AS age_band,
        p.gender, p.race, p.ethnicity, p.marital_status
        FROM ({chosen}) i JOIN fhir_patients p USING (patient)"""


def _count_unindexed(con, spec, source: SourceData) -> None:
    without = con.execute(
        f"SELECT count(*) FROM fhir_patients WHERE patient NOT IN (SELECT group_id FROM ({source.rows_sql}))"
    ).fetchone()[0]
    source.skipped["Patient without an index encounter (of the task's classes, before death)"] += without


def _us_core(resource: dict, name: str) -> str | None:
    """The ``text`` of a US Core race or ethnicity extension."""
    for extension in resource.get("extension", []) or []:
        if isinstance(extension, dict) and str(extension.get("url", "")).endswith(name):
            for part in extension.get("extension", []) or []:
                if isinstance(part, dict) and part.get("url") == "text":
                    return part.get("valueString")
    return None


def _reason(error: ResourceError) -> str:
    """The 'expected ...' part of a resource error, without where it was (for counting by reason)."""
    text = str(error)
    text = text[text.index("expected") :] if "expected" in text else text
    return re.split(r",| \(", text, maxsplit=1)[0]


def _duck_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_floating(kind):
        return "DOUBLE"
    return "VARCHAR"
