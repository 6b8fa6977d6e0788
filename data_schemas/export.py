"""Write the JSON Schemas of the data contracts to ``data_schemas/json/``.

Run ``python -m data_schemas.export`` (or ``make schemas``) after changing a model; a test checks that
the committed files are current.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from data_schemas.audit_record import AuditRecord
from data_schemas.bundle import BundleManifest
from data_schemas.cohort_spec import CohortSpec
from data_schemas.problems import Problem
from data_schemas.records import PatientRecord, PredictionRecord
from data_schemas.task import TaskSpec

SCHEMAS: dict[str, type[BaseModel]] = {
    "cohort_spec": CohortSpec,
    "patient_record": PatientRecord,
    "prediction_record": PredictionRecord,
    "bundle_manifest": BundleManifest,
    "audit_record": AuditRecord,
    "problem": Problem,
    "import_task": TaskSpec,
}
JSON_DIR = Path(__file__).parent / "json"


def render(model: type[BaseModel]) -> str:
    """The schema file's exact text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, model in SCHEMAS.items():
        (JSON_DIR / f"{name}.schema.json").write_text(render(model), encoding="utf-8")
        print(f"wrote {JSON_DIR / f'{name}.schema.json'}")


if __name__ == "__main__":
    main()
