"""Validated data contracts of DeepWe-MM: pydantic models only, no torch.

Untrusted input (a cohort spec, a table row, a bundle manifest) is validated here once; code past
this boundary trusts its types.
"""

from data_schemas.audit_record import AuditRecord
from data_schemas.bundle import BundleManifest
from data_schemas.cohort_spec import (
    MODALITY_KINDS,
    AudioModality,
    CohortSpec,
    ImageModality,
    ModalitySpec,
    OutcomeSpec,
    SensorModality,
    SplitSpec,
    TabularModality,
    TextModality,
)
from data_schemas.problems import Problem
from data_schemas.records import (
    NeighbourWeight,
    PatientRecord,
    PredictionRecord,
    TokenWeight,
)
from data_schemas.task import TaskSpec

__all__ = [
    "MODALITY_KINDS",
    "AudioModality",
    "AuditRecord",
    "BundleManifest",
    "CohortSpec",
    "ImageModality",
    "ModalitySpec",
    "NeighbourWeight",
    "OutcomeSpec",
    "PatientRecord",
    "PredictionRecord",
    "Problem",
    "SensorModality",
    "SplitSpec",
    "TabularModality",
    "TaskSpec",
    "TextModality",
    "TokenWeight",
]
