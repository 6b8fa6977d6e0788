"""The prediction output table: one flat row per :class:`~data_schemas.PredictionRecord`, its
Parquet schema, and reading a written output back (CSV cells that a spreadsheet would run as a
formula are neutralised)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from data_schemas import PredictionRecord
from pipelines.bundles.loading import Bundle

JSON_COLUMNS = (
    "out_of_range",
    "probabilities",
    "modality_present",
    "modality_weights",
    "modality_errors",
    "skipped_lines",
    "top_features",
    "neighbours",
)


def record_to_row(record: PredictionRecord) -> dict[str, Any]:
    """A flat output row: JSON text for nested fields, plus ``present_<m>`` / ``weight_<m>`` columns."""
    data = record.model_dump(mode="json")
    row = {k: (json.dumps(v) if k in JSON_COLUMNS else v) for k, v in data.items()}
    for name, flag in record.modality_present.items():
        row[f"present_{name}"] = flag
    for name, weight in record.modality_weights.items():
        row[f"weight_{name}"] = weight
    return row


def row_to_record(row: dict[str, Any]) -> PredictionRecord:
    """The inverse of :func:`record_to_row`."""
    data = {k: v for k, v in row.items() if not k.startswith(("present_", "weight_"))}
    for key in JSON_COLUMNS:
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    data = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
    for key in ("patient_id", "label", "error"):  # CSV readers guess numbers for "1" or "007"
        if data.get(key) is not None:
            data[key] = str(data[key])
    return PredictionRecord.model_validate(data)


_FIELD_TYPES = {"row": pa.int64(), "risk": pa.float64(), "ood": pa.bool_(), "ood_score": pa.float64()}


def output_schema(bundle: Bundle) -> pa.Schema:
    """The output table's columns and types (strings unless listed in ``_FIELD_TYPES``)."""
    fields = [pa.field(name, _FIELD_TYPES.get(name, pa.string())) for name in PredictionRecord.model_fields]
    fields += [pa.field(f"present_{m}", pa.bool_()) for m in bundle.spec.modalities]
    fields += [pa.field(f"weight_{m}", pa.float64()) for m in bundle.spec.modalities]
    return pa.schema(fields)


def records_table(bundle: Bundle, records: Sequence[PredictionRecord]) -> pa.Table:
    """The output table of these records (the columns of :func:`output_schema`)."""
    schema = output_schema(bundle)
    rows = [record_to_row(r) for r in records]
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


_QUOTED_FORMULA = r"^'[=+\-@\t\r]"


def neutralised(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a formula prefixed by ``'`` (for CSV output).

    A spreadsheet then shows the text instead of running it; :func:`read_predictions` removes the
    prefix again.
    """
    frame = frame.copy()
    for column in frame.columns:
        if _is_text(frame[column]):
            text = frame[column]
            risky = text.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START))
            frame[column] = text.where(~risky, "'" + text.astype(str))
    return frame


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A ``deepwe predict`` output (Parquet, or CSV with formula-like text un-neutralised)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path)
    for column in frame.columns:
        if _is_text(frame[column]):
            quoted = (
                frame[column].astype(str).str.contains(_QUOTED_FORMULA, regex=True) & frame[column].notna()
            )
            frame[column] = frame[column].where(~quoted, frame[column].astype(str).str[1:])
    return frame
