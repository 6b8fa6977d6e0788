"""The cohort spec: the YAML file that tells DeepWe-MM what a cohort table contains.

See docs/cohort-spec.md for a complete example. Every model forbids unknown keys, so a
misspelt key is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODALITY_KINDS = ("tabular", "text", "image", "audio", "sensor")
SPLIT_VALUES = ("train", "val", "test")
SplitName = Literal["train", "val", "test"]
DEFAULT_FRACTIONS: dict[SplitName, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def canonical_label(value: object) -> str:
    """The string form used to compare outcome values: ``1``, ``1.0`` and ``"1"`` are all ``"1"``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


class OutcomeSpec(_Strict):
    """The outcome column and its task.

    For a binary task ``classes`` defaults to ``[0, 1]`` and ``positive`` to ``1``; any other coding
    (``yes``/``no``) must declare ``classes``. For multiclass, ``classes`` fixes the order of the
    model's outputs; when omitted it is taken from the training data, sorted.
    """

    column: str
    task: Literal["binary", "multiclass"] = "binary"
    positive: str | int | None = None
    classes: list[str | int] | None = None

    @model_validator(mode="after")
    def _check_classes(self) -> OutcomeSpec:
        classes = self.class_labels()
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError(f"outcome.classes has duplicates: {self.classes}")
        if self.task == "binary":
            if classes is None or len(classes) != 2:
                raise ValueError(
                    f"a binary outcome needs exactly 2 classes, got {self.classes}; "
                    "declare them as outcome.classes: [negative, positive]"
                )
            if self.positive_label() not in classes:
                raise ValueError(
                    f"outcome.positive {self.positive!r} is not one of outcome.classes {self.classes}"
                )
        elif self.positive is not None:
            raise ValueError("outcome.positive applies to binary outcomes only")
        if self.task == "multiclass" and classes is not None and len(classes) < 3:
            raise ValueError("a multiclass outcome needs at least 3 classes; use task: binary for 2")
        return self

    def positive_label(self) -> str:
        """The canonical label of the positive class (binary tasks)."""
        return canonical_label(1 if self.positive is None else self.positive)

    def class_labels(self) -> list[str] | None:
        """Canonical labels of the declared classes, or None when taken from the data."""
        if self.classes is not None:
            return [canonical_label(c) for c in self.classes]
        return ["0", "1"] if self.task == "binary" else None


class SplitSpec(_Strict):
    """Where the train/val/test split comes from.

    With ``column``, each row names its split (``train``, ``val`` or ``test``). Without it the split is
    drawn from ``seed`` and ``fractions``: per row id, or, with ``group`` (a column such as
    ``subject_id``), per group, so that all rows of a group (one patient's stays or visits) fall in
    the same split.
    """

    column: str | None = None
    group: str | None = None
    seed: int = 0
    fractions: dict[SplitName, float] = Field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if any(f < 0 for f in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"split.fractions must be non-negative and sum to 1, got {value}")
        return value

    @model_validator(mode="after")
    def _group_or_column(self) -> SplitSpec:
        if self.column is not None and self.group is not None:
            raise ValueError(
                "split.group applies to a drawn split; with split.column each row already names its "
                "split, so give one of them"
            )
        return self


class TabularModality(_Strict):
    """EHR values in the table itself: one token per variable."""

    kind: Literal["tabular"]
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_variables(self) -> TabularModality:
        if not self.numeric and not self.categorical:
            raise ValueError("a tabular modality needs at least one numeric or categorical column")
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {both}")
        return self

    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class TextModality(_Strict):
    """Clinical notes: a path to a UTF-8 ``.txt`` file per row, or the text itself (``inline``)."""

    kind: Literal["text"]
    column: str
    inline: bool = False

    def columns(self) -> list[str]:
        return [self.column]


class ImageModality(_Strict):
    """A medical image per row: ``.dcm``, ``.nii``/``.nii.gz``, ``.png``, ``.jpg``/``.jpeg`` or ``.npy``."""

    kind: Literal["image"]
    column: str

    def columns(self) -> list[str]:
        return [self.column]


class AudioModality(_Strict):
    """A recording per row (heart or lung sounds, cough): ``.wav`` or ``.flac``.

    ``sample_rate`` (Hz) is the rate the reader resamples to; ``duration_s`` the length it crops or
    pads to (the encoder's default when omitted).
    """

    kind: Literal["audio"]
    column: str
    sample_rate: int = Field(gt=0, le=192_000)
    duration_s: float | None = Field(default=None, gt=0, le=3600)

    def columns(self) -> list[str]:
        return [self.column]


class SensorModality(_Strict):
    """A multichannel time series per row: bedside vitals, ECG, wearables.

    Files are a CSV/Parquet table with a time column and one column per channel, a WFDB record
    (``.hea``), or the PhysioNet 2012 long format (``Time,Parameter,Value``). Irregular samples are
    placed on a regular grid of ``sample_rate`` Hz (or one sample every ``period_s`` seconds) with an
    observation mask. Samples of a channel that fall in the same grid cell are averaged, except for
    the ``summed_channels`` (amounts such as urine output), whose samples add up.
    """

    kind: Literal["sensor"]
    column: str
    channels: list[str] = Field(min_length=1)
    summed_channels: list[str] = Field(default_factory=list)
    sample_rate: float | None = Field(default=None, gt=0)
    period_s: float | None = Field(default=None, gt=0)
    time_column: str = "time"
    time_unit: Literal["s", "min", "h"] = "s"
    duration_s: float | None = Field(default=None, gt=0)
    max_file_mb: float = Field(
        default=20.0,
        gt=0,
        description="largest CSV, Parquet or PhysioNet 2012 file read, in MB; a larger one fails its row",
    )

    @model_validator(mode="after")
    def _one_rate(self) -> SensorModality:
        if (self.sample_rate is None) == (self.period_s is None):
            raise ValueError("a sensor modality needs exactly one of sample_rate (Hz) or period_s")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"sensor channels has duplicates: {self.channels}")
        unknown = [name for name in self.summed_channels if name not in self.channels]
        if unknown:
            raise ValueError(f"summed_channels {unknown} are not in the channel list {self.channels}")
        return self

    @property
    def rate_hz(self) -> float:
        """The grid rate in Hz, whichever of ``sample_rate`` or ``period_s`` was given."""
        return self.sample_rate if self.sample_rate is not None else 1.0 / cast(float, self.period_s)

    def columns(self) -> list[str]:
        return [self.column]


ModalitySpec = Annotated[
    TabularModality | TextModality | ImageModality | AudioModality | SensorModality,
    Field(discriminator="kind"),
]
FILE_KINDS = ("text", "image", "audio", "sensor")


class CohortSpec(_Strict):
    """A cohort: a table (CSV or Parquet) and what each of its columns means.

    ``table`` is relative to the folder of the spec file. File paths in the table resolve under
    ``data_root`` (relative to the spec's folder, default that folder itself) and may not escape it.
    ``modalities`` maps the user's modality names to their kind and columns; a blank cell means that
    modality is missing for that patient. ``outcome`` may be omitted for a cohort that is only
    predicted on.
    """

    name: str = Field(min_length=1)
    description: str | None = None
    table: str
    data_root: str | None = None
    id: str
    outcome: OutcomeSpec | None = None
    split: SplitSpec | None = None
    modalities: dict[str, ModalitySpec] = Field(min_length=1)
    subgroups: list[str] = Field(default_factory=list)

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"modality name {name!r} must start with a letter and use only letters, "
                    "digits, '_' or '-' (at most 64 characters)"
                )
        return value

    @model_validator(mode="after")
    def _columns_have_one_role(self) -> CohortSpec:
        seen: dict[str, str] = {}
        for column, role in self.column_roles():
            if role.startswith("subgroup") or role == "split.group":
                continue
            if column in seen and seen[column] != role:
                raise ValueError(f"column {column!r} is used as both {seen[column]} and {role}")
            seen[column] = role
        return self

    def column_roles(self) -> list[tuple[str, str]]:
        """Every table column the spec refers to, with the key that names it (``id``, ``modalities.labs``)."""
        roles = [(self.id, "id")]
        if self.outcome is not None:
            roles.append((self.outcome.column, "outcome.column"))
        if self.split is not None and self.split.column is not None:
            roles.append((self.split.column, "split.column"))
        if self.split is not None and self.split.group is not None:
            roles.append((self.split.group, "split.group"))
        for name, modality in self.modalities.items():
            roles += [(column, f"modalities.{name}") for column in modality.columns()]
        roles += [(column, "subgroups") for column in self.subgroups]
        return roles

    def file_modalities(
        self,
    ) -> dict[str, TextModality | ImageModality | AudioModality | SensorModality]:
        """Modalities whose cells are paths to files (inline text excluded)."""
        return {
            name: m
            for name, m in self.modalities.items()
            if not isinstance(m, TabularModality) and not (isinstance(m, TextModality) and m.inline)
        }
