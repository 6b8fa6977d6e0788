from __future__ import annotations

import json

import pytest

from data_schemas.export import JSON_DIR, SCHEMAS, render


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_json_schema_is_current(name):
    path = JSON_DIR / f"{name}.schema.json"
    assert path.is_file(), f"{path} is missing: run `make schemas`"
    assert path.read_text(encoding="utf-8") == render(SCHEMAS[name]), f"{path} is stale: run `make schemas`"


def test_no_stray_schema_files():
    expected = {f"{name}.schema.json" for name in SCHEMAS}
    assert {p.name for p in JSON_DIR.glob("*.json")} == expected


def test_cohort_schema_lists_every_modality_kind():
    schema = json.loads((JSON_DIR / "cohort_spec.schema.json").read_text())
    kinds = {
        d["properties"]["kind"]["const"]
        for d in schema["$defs"].values()
        if "kind" in d.get("properties", {})
    }
    assert kinds == {"tabular", "text", "image", "audio", "sensor"}
