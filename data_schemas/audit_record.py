"""One record of the append-only prediction audit log (JSON Lines, hash-chained)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from data_schemas.records import PredictionRecord

_SHA256 = r"^[0-9a-f]{64}$"


class AuditRecord(BaseModel):
    """A prediction as it was made: who, when, with which model, on which input, and the output.

    ``previous_hash`` is the ``record_hash`` of the record before it (64 zeros for the first), and
    ``record_hash`` is the sha256 of this record's canonical JSON without ``record_hash``; an edited,
    removed or reordered record breaks the chain.

    ``batch`` names the prediction run and chunk the record was appended with (``"<run>/<chunk>"``),
    so a resumed run never logs a chunk twice. It is left out of the JSON when absent, so records
    written without it keep their hashes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence: int = Field(ge=0)
    time: datetime
    user: str
    model_sha256: str = Field(pattern=_SHA256)
    input_sha256: str = Field(pattern=_SHA256)
    code_version: str
    output: PredictionRecord
    previous_hash: str = Field(pattern=_SHA256)
    record_hash: str = Field(pattern=_SHA256)
    batch: str | None = None
