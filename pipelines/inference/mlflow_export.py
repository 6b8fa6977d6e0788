"""``deepwe export mlflow``: a model bundle as an MLflow pyfunc model, without a pickle.

MLflow's "models from code": the model is the script ``mlflow_model_code.py`` (copied into the
export), which builds :class:`DeepWeModel`; the bundle travels as an artifact folder and
:meth:`DeepWeModel.load_context` verifies every hash of it with ``load_bundle``. Input: a DataFrame
of cohort rows (the model's id column and modality columns). Output: the prediction table of
``deepwe predict``, with missing values as None so that served JSON holds ``null``, never ``NaN``.

File cells are relative to a data root fixed at export (``--data-root``) or, when none is given, the
working folder of the process that loads the model; the files must be readable there.

Only this module and ``mlflow_model_code`` import ``mlflow`` (an import-linter contract); the extra
installs it: ``pip install 'deepwe-mm[mlflow]'``.
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType

from data_schemas import CohortSpec
from pipelines.bundles.loading import Bundle, load_bundle
from pipelines.inference.frame_predict import predict_frame
from pipelines.inference.output_table import output_schema

MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")
BUNDLE_ARTIFACT = "bundle"
PICKLE_SUFFIXES = (".pkl", ".pickle")
_ARROW_TYPES = {pa.int64(): DataType.long, pa.float64(): DataType.double, pa.bool_(): DataType.boolean}


class DeepWeModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: a verified bundle that predicts DataFrames of cohort rows."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load and verify the bundle artifact (every sha256) and fix the data root."""
        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT], device="cpu")
        root = (context.model_config or {}).get("data_root")
        self.data_root = Path(root) if root else Path(os.getcwd())

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The prediction table for ``model_input``, one row per input row, missing values as None."""
        frame = predict_frame(self.bundle, pd.DataFrame(model_input), self.data_root)
        return frame.astype(object).where(frame.notna(), None)


def signature(bundle: Bundle) -> ModelSignature:
    """Input: the id and modality columns of the bundle's cohort spec; output: the prediction table."""
    return ModelSignature(inputs=input_schema(bundle.spec), outputs=_output_schema(bundle))


def input_schema(spec: CohortSpec) -> Schema:
    """The id column and every column of the model's modalities, each required (a blank cell, not an
    absent column, is a missing modality: a misspelt column name is refused, not ignored).

    Cells are typed ``Any``: DeepWe checks them per row (a non-number in a numeric column is missing,
    with the reason), where MLflow's strict types would refuse a whole request for an integer age
    in a column of doubles or for numeric patient ids.
    """
    columns = [ColSpec(AnyType(), spec.id)]
    for modality in spec.modalities.values():
        columns += [ColSpec(AnyType(), column) for column in modality.columns()]
    return Schema(columns)


def _output_schema(bundle: Bundle) -> Schema:
    return Schema(
        [
            ColSpec(_ARROW_TYPES.get(f.type, DataType.string), f.name, required=False)
            for f in output_schema(bundle)
        ]
    )


def export_mlflow(model_dir: str | Path, out: str | Path, *, data_root: str | Path | None = None) -> Path:
    """Write the bundle at ``model_dir`` as an MLflow model folder ``out``.

    Raises:
        BundleError: the bundle does not verify.
        FileExistsError: ``out`` already exists.
        RuntimeError: MLflow wrote a pickle (the export is removed).
    """
    model_dir, out = Path(model_dir).resolve(), Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new folder for the MLflow model")
    bundle = load_bundle(model_dir, device="cpu")
    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=str(MODEL_CODE),
        artifacts={BUNDLE_ARTIFACT: str(model_dir)},
        signature=signature(bundle),
        model_config={"data_root": str(Path(data_root).resolve()) if data_root else ""},
        pip_requirements=[
            f"deepwe-mm=={metadata.version('deepwe-mm')}",
            f"mlflow-skinny=={metadata.version('mlflow-skinny')}",
        ],
    )
    pickles = [p for p in out.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        shutil.rmtree(out)
        raise RuntimeError(f"{pickles[0]}: MLflow wrote a pickle; this project never ships one")
    return out
