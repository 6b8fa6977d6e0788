"""The manifest of a model bundle (a folder; never a pickle)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data_schemas.cohort_spec import CohortSpec

BUNDLE_FORMAT_VERSION = 4
BUNDLE_FILES = (
    "config.json",
    "weights.safetensors",
    "preprocessing.json",
    "reference.safetensors",
    "calibration.json",
    "metrics.json",
    "model_card.md",
)
_SHA256 = r"^[0-9a-f]{64}$"


class BundleManifest(BaseModel):
    """``manifest.json``: what a bundle holds and how to check it.

    ``files`` maps every other file of the bundle to its sha256; loading refuses a bundle with a file
    that is not listed, a listed file that is missing, or a hash that does not match.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["deepwe-mm-bundle"] = "deepwe-mm-bundle"
    format_version: int = Field(ge=1)
    code_version: str
    library_versions: dict[str, str]
    created_at: datetime
    files: dict[str, str] = Field(description="file name -> sha256 hex digest")
    cohort_spec: CohortSpec
    training_data_fingerprint: str = Field(pattern=_SHA256)

    @field_validator("files")
    @classmethod
    def _plain_names_and_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"bundle file name {name!r} must be a plain file name")
            if not re.fullmatch(_SHA256, digest):
                raise ValueError(f"sha256 of {name!r} is not 64 lowercase hex digits: {digest!r}")
        return value
