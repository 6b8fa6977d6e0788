from __future__ import annotations

import pytest
from pydantic import ValidationError

from data_schemas import CohortSpec, OutcomeSpec, PatientRecord, SensorModality
from data_schemas.cohort_spec import canonical_label

MINIMAL = {
    "name": "icu",
    "table": "cohort.csv",
    "id": "patient_id",
    "outcome": {"column": "died"},
    "modalities": {"labs": {"kind": "tabular", "numeric": ["age"]}},
}


def test_minimal_spec_gets_sane_defaults():
    spec = CohortSpec.model_validate(MINIMAL)
    assert spec.outcome.task == "binary"
    assert spec.outcome.class_labels() == ["0", "1"]
    assert spec.outcome.positive_label() == "1"
    assert spec.split is None
    assert spec.column_roles() == [
        ("patient_id", "id"),
        ("died", "outcome.column"),
        ("age", "modalities.labs"),
    ]


def test_unknown_key_is_refused():
    with pytest.raises(ValidationError, match="numerc"):
        CohortSpec.model_validate({**MINIMAL, "modalities": {"labs": {"kind": "tabular", "numerc": ["age"]}}})


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ({"column": "y", "positive": "yes"}, "not one of outcome.classes"),
        ({"column": "y", "classes": ["a", "b", "c"]}, "exactly 2 classes"),
        ({"column": "y", "task": "multiclass", "classes": [0, 1]}, "at least 3 classes"),
        ({"column": "y", "task": "multiclass", "positive": 1}, "binary outcomes only"),
    ],
)
def test_outcome_rules(outcome, message):
    with pytest.raises(ValidationError, match=message):
        OutcomeSpec.model_validate(outcome)


def test_yes_no_outcome_declares_its_classes():
    outcome = OutcomeSpec.model_validate({"column": "y", "positive": "yes", "classes": ["no", "yes"]})
    assert outcome.positive_label() == "yes"


@pytest.mark.parametrize(
    ("raw", "label"), [(1, "1"), (1.0, "1"), ("1.0", "1"), (True, "1"), (" yes ", "yes")]
)
def test_canonical_label(raw, label):
    assert canonical_label(raw) == label


def test_sensor_needs_exactly_one_rate():
    base = {"kind": "sensor", "column": "v", "channels": ["HR"]}
    assert SensorModality.model_validate({**base, "period_s": 900}).rate_hz == pytest.approx(1 / 900)
    for bad in ({}, {"period_s": 900, "sample_rate": 1.0}):
        with pytest.raises(ValidationError, match="exactly one of sample_rate"):
            SensorModality.model_validate({**base, **bad})


def test_a_column_cannot_have_two_roles():
    bad = {**MINIMAL, "modalities": {"labs": {"kind": "tabular", "numeric": ["died"]}}}
    with pytest.raises(ValidationError, match="'died' is used as both"):
        CohortSpec.model_validate(bad)


def test_modality_names_are_safe_identifiers():
    bad = {**MINIMAL, "modalities": {"../x": {"kind": "tabular", "numeric": ["age"]}}}
    with pytest.raises(ValidationError, match="must start with a letter"):
        CohortSpec.model_validate(bad)


def test_patient_record_present_flags():
    record = PatientRecord(
        row=1,
        patient_id="p1",
        tabular={"labs": {"age": None, "sex": None}},
        paths={"cxr": "/data/a.dcm", "pcg": None},
        texts={"notes": "stable"},
    )
    assert record.present() == {"labs": False, "cxr": True, "pcg": False, "notes": True}
