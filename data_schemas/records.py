"""Per-patient records: what goes into the model and what comes out of a prediction."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = float | int | str | None


class PatientRecord(BaseModel):
    """One row of a validated cohort. ``None`` means missing, everywhere.

    ``tabular`` maps a tabular modality to its variables and values; ``paths`` maps a file modality to
    the resolved file path; ``texts`` maps an inline text modality to its text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1, description="1-based data row in the cohort table")
    patient_id: str
    outcome: str | None = None
    split: Literal["train", "val", "test"] | None = None
    tabular: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    paths: dict[str, str | None] = Field(default_factory=dict)
    texts: dict[str, str | None] = Field(default_factory=dict)
    subgroups: dict[str, str | None] = Field(default_factory=dict)

    def present(self) -> dict[str, bool]:
        """Modality name -> observed for this patient."""
        flags = {name: any(v is not None for v in values.values()) for name, values in self.tabular.items()}
        flags |= {name: path is not None for name, path in self.paths.items()}
        flags |= {name: text is not None for name, text in self.texts.items()}
        return flags


class TokenWeight(BaseModel):
    """A learned feature weight for one token of one modality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: str
    token: str
    weight: float = Field(ge=0, le=1)


class NeighbourWeight(BaseModel):
    """A reference-cohort patient (pseudonymous id) and the edge weight the patient graph gave it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_id: str
    weight: float = Field(ge=0, le=1)
    outcome: str | None = None


class PredictionRecord(BaseModel):
    """One output row of ``deepwe predict``: exactly one per input row, in input order.

    ``error`` names the modality and the problem but never patient data. For an error row the
    prediction fields are ``None``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1)
    patient_id: str
    status: Literal["ok", "error"]
    error: str | None = None
    risk: float | None = Field(default=None, ge=0, le=1, description="calibrated P(positive)")
    probabilities: dict[str, float] | None = None
    label: str | None = None
    modality_present: dict[str, bool] = Field(default_factory=dict)
    modality_weights: dict[str, float] = Field(default_factory=dict)
    modality_errors: dict[str, str] = Field(default_factory=dict)
    skipped_lines: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="modality -> reason -> lines, rows or cells of its file skipped while reading",
    )
    top_features: list[TokenWeight] = Field(default_factory=list)
    neighbours: list[NeighbourWeight] = Field(default_factory=list)
    ood: bool | None = None
    ood_score: float | None = None
    out_of_range: list[str] = Field(
        default_factory=list, description="numeric variables (modality.variable) outside their training range"
    )
    model_sha256: str
    input_sha256: str
