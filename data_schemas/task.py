"""The import task: the YAML that turns an event-level source (MIMIC-IV, FHIR, OMOP) into a cohort.

A task says which rows the cohort has (``index``: one per ICU stay, encounter or visit), when each
row's observation window lies relative to its index time (``window``), what the outcome is and over
which horizon (``outcome``), which source columns known at the index time become tabular values
(``static``), and which codes become which variables (``variables``): the latest in-window value as
a tabular column, every in-window value as a channel of the row's sensor series, or both. Nothing
after the window's end enters a feature. See ``docs/importers.md``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SOURCES = ("mimic-iv", "fhir", "omop")
_EVERY_TARGET: tuple[Literal["tabular", "sensor"], ...] = ("tabular", "sensor")
_COLUMN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexSpec(_Strict):
    """Which source events are rows, and whose time is the index time.

    ``kind`` is source-specific: ``icu_stay`` (MIMIC-IV), ``encounter`` (FHIR), ``visit`` (OMOP).
    ``classes`` keeps only events of those classes (FHIR encounter class codes such as ``EMER``, OMOP
    visit concept ids); empty keeps all. ``which`` keeps every such event as a row (``each``), or
    only each patient's ``first`` or ``last``.
    """

    kind: Literal["icu_stay", "encounter", "visit"]
    classes: list[str] = Field(default_factory=list)
    which: Literal["each", "first", "last"] = "each"


class WindowSpec(_Strict):
    """The observation window, in hours relative to the index time: ``[start_h, end_h)``."""

    start_h: float = 0.0
    end_h: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        if not self.end_h > self.start_h:
            raise ValueError(f"window.end_h ({self.end_h}) must be after window.start_h ({self.start_h})")
        return self


class OutcomeRule(_Strict):
    """The outcome, written as a 0/1 column named ``column``.

    ``in_hospital_death``: death during the index admission (MIMIC-IV). ``death``: death after the
    index time, within ``within_days`` when given. ``condition``: a condition with one of ``codes``
    (SNOMED, ICD, or OMOP concept ids, as the source codes them) starting after the index time,
    within ``within_days`` when given.
    """

    kind: Literal["in_hospital_death", "death", "condition"]
    column: str = "outcome"
    within_days: float | None = Field(default=None, gt=0)
    codes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _codes_for_conditions(self) -> OutcomeRule:
        if self.kind == "condition" and not self.codes:
            raise ValueError("an outcome of kind 'condition' needs codes")
        if self.kind != "condition" and self.codes:
            raise ValueError(f"outcome.codes applies to kind 'condition', not {self.kind!r}")
        if not _COLUMN.match(self.column):
            raise ValueError(f"outcome.column {self.column!r} must be a plain column name")
        return self


class VariableSpec(_Strict):
    """One clinical variable: the source codes that measure it and where its values go.

    ``name`` defaults to the source's own name for the first code (``d_labitems``, ``CONCEPT.csv``,
    the Observation's ``code.coding.display``). ``unit``: values recorded in another unit are left
    out and counted (default: the variable's most common unit). ``range``: values outside
    ``[low, high]`` are implausible, left out and counted.
    """

    name: str | None = Field(default=None, min_length=1, max_length=100)
    codes: list[str] = Field(min_length=1)
    to: list[Literal["tabular", "sensor"]] = Field(default_factory=lambda: list(_EVERY_TARGET), min_length=1)
    unit: str | None = None
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _range_ordered(self) -> VariableSpec:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [low, high] with low < high")
        if self.name is not None and ("," in self.name or "\n" in self.name):
            raise ValueError(f"variable name {self.name!r} may not hold a comma or a line break")
        return self


class TaskSpec(_Strict):
    """A declarative task: rows, window, outcome and the code -> modality mapping."""

    name: str = Field(min_length=1)
    description: str | None = None
    source: Literal["mimic-iv", "fhir", "omop"]
    index: IndexSpec
    window: WindowSpec
    outcome: OutcomeRule
    static: list[str] = Field(default_factory=list)
    variables: list[VariableSpec] = Field(default_factory=list)
    notes: bool = True
    period_h: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _has_features(self) -> TaskSpec:
        if not self.static and not self.variables:
            raise ValueError("a task needs static columns or variables (or both)")
        names = [v.name for v in self.variables if v.name is not None]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variable names repeat: {repeated}")
        return self
