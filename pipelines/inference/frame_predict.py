"""Predictions for a DataFrame of cohort rows: the notebook and model-serving way to ``deepwe predict``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_schemas import Problem
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.inference.batching import PredictOptions, check_compatible, iter_predictions
from pipelines.inference.output_table import records_table


def predict_frame(
    bundle: Bundle, frame: pd.DataFrame, data_root: str | Path, options: PredictOptions | None = None
) -> pd.DataFrame:
    """The prediction table of ``deepwe predict`` for the rows of ``frame``, one row per input row.

    Args:
        frame: cohort rows: the model's id column and the columns of its modalities (blank cells
            are missing modalities). Numbers may be numbers or text.
        data_root: the folder that file cells are relative to; a cell naming a file outside it is
            refused for that row.

    Raises:
        SpecError: a column the model needs is absent, a patient id is blank or repeated, or a file
            cell escapes ``data_root`` (every problem listed, with row and column).
    """
    cohort = Cohort.for_prediction(bundle.spec, frame, data_root)
    problems = check_compatible(bundle, cohort)
    if not problems:
        problems = _escaping_paths(cohort)
    if problems:
        raise SpecError(problems)
    records = list(iter_predictions(bundle, cohort, range(len(cohort.table)), options or PredictOptions()))
    return records_table(bundle, records).to_pandas()


def _escaping_paths(cohort: Cohort) -> list[Problem]:
    """A problem per file cell that resolves outside the data root (the path itself is not shown)."""
    problems = []
    for modality in cohort.spec.file_modalities().values():
        for row, cell in enumerate(cohort.table[modality.column], start=1):
            if cell is None:
                continue
            try:
                cohort.resolve(str(cell))
            except ValueError as error:
                problems.append(
                    Problem(file=str(cohort.spec_path), row=row, column=modality.column, expected=str(error))
                )
    return problems
