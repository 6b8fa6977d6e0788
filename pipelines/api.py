"""The Python API behind every surface: training a cohort into a bundle, and a bundle's predictions,
evaluation and explanations. The ``deepwe`` commands, the dashboard and the benchmarks call these
functions; :class:`pipelines.bundles.loading.Bundle` offers them as methods for notebooks::

    from pipelines import Cohort, load_bundle, train

    cohort = Cohort.from_frame(frame, spec, root="data")   # file cells resolve under data/
    bundle = train(cohort.split(seed=1), "configs/tiny.yaml")
    bundle.predict_proba(cohort)                           # (N, C) calibrated probabilities
    bundle.evaluate(cohort).auroc
    bundle.explain(cohort, "P-0001").shapley
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from pipelines.bundles import loading
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.spec_io import SpecError
from pipelines.training.train_config import TrainConfig

if TYPE_CHECKING:
    from pipelines.evaluation.evaluation import Evaluation
    from pipelines.explanations.patient_explanation import PatientExplanation
    from pipelines.inference.batching import PredictOptions

CohortLike = Cohort | str | Path
"""A :class:`Cohort`, or the path of a cohort spec (YAML) to load."""
ConfigLike = TrainConfig | Mapping[str, Any] | str | Path | None
"""Training settings: a :class:`TrainConfig`, a mapping of its keys, a YAML file of them, or None
for the defaults."""


def as_train_config(config: ConfigLike) -> TrainConfig:
    """Training settings from any of the forms of :data:`ConfigLike`.

    Raises:
        ValueError: an unknown key (with a "did you mean"), or a file that is not a mapping.
    """
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, str | Path):
        return TrainConfig.from_yaml(config)
    return TrainConfig.from_dict(dict(config))


def checked_cohort(cohort: CohortLike) -> Cohort:
    """The cohort once it passes ``deepwe validate``'s checks (rows, columns, files).

    Raises:
        SpecError: every problem found, each with its file, row and column.
    """
    from pipelines.cohorts.prepare import validated_cohort
    from pipelines.cohorts.validate import validate_loaded

    if not isinstance(cohort, Cohort):
        return validated_cohort(cohort)
    report = validate_loaded(cohort)
    if report.cohort is None:
        raise SpecError(report.problems)
    return report.cohort


def train(
    cohort: CohortLike,
    config: ConfigLike = None,
    *,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> NotebookBundle:
    """Validate ``cohort``, train a DeepWe model on its training split and load the bundle written.

    Args:
        cohort: a cohort (from :meth:`Cohort.from_frame` or :func:`load_cohort`) or a spec path.
        config: training settings (see :data:`ConfigLike`).
        out: the bundle folder to write; a new temporary folder when None.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show progress bars and one line per epoch.

    Returns:
        The verified bundle, loaded on ``device`` (``bundle.path`` is where it was written).

    Raises:
        SpecError: the cohort does not validate.
        CohortError: the cohort cannot be trained on (one class, too few patients, an empty split).
    """
    from pipelines.common.devices import pick_device
    from pipelines.training.train import train as train_bundle

    checked = checked_cohort(cohort)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="deepwe-")) / "model"
    result = train_bundle(
        checked.spec_path,
        folder,
        as_train_config(config),
        device=device,
        progress=progress,
        cohort=checked,
    )
    return load_bundle(result.bundle, device=pick_device(device))


def compatible(bundle: Bundle, cohort: CohortLike) -> Cohort:
    """The cohort, once checked against what the model reads (modalities, columns, unique ids).

    Raises:
        SpecError: every column, id or spec problem that keeps the model from reading the cohort.
    """
    from pipelines.inference.batching import check_compatible, compatible_cohort

    if not isinstance(cohort, Cohort):
        return compatible_cohort(bundle, cohort)
    problems = check_compatible(bundle, cohort)
    if problems:
        raise SpecError(problems)
    return cohort


def predict_table(
    bundle: Bundle,
    cohort: Cohort,
    positions: Sequence[int] | None = None,
    options: PredictOptions | None = None,
) -> pd.DataFrame:
    """The ``deepwe predict`` rows of ``cohort`` (every row, or the 0-based ``positions``), in order.

    The cohort is not checked here (see :func:`compatible`). A row whose files fail is an error row,
    never a lost one.

    Returns:
        One row per predicted patient: ``row``, ``patient_id``, ``status``, ``risk``, ``label``,
        ``probabilities`` (JSON), ``present_<m>``, ``weight_<m>``, ... (see
        :func:`pipelines.inference.output_table.record_to_row`).
    """
    from pipelines.inference.batching import PredictOptions, iter_predictions
    from pipelines.inference.output_table import record_to_row

    chosen = range(len(cohort.table)) if positions is None else positions
    records = iter_predictions(bundle, cohort, chosen, options or PredictOptions())
    return pd.DataFrame([record_to_row(r) for r in records])


def class_probabilities(bundle: Bundle, cohort: Cohort, table: pd.DataFrame) -> pd.DataFrame:
    """(N, C) calibrated class probabilities of a prediction table, indexed by patient id.

    Columns are ``bundle.classes`` in output order; error rows are NaN. A binary model's come from
    the unrounded ``risk`` column, a multiclass model's from ``probabilities``.
    """
    classes = list(bundle.classes)
    if len(classes) == 2:
        risk = pd.to_numeric(table.get("risk", pd.Series(dtype=float)), errors="coerce").to_numpy(float)
        values = [[1.0 - r, r] for r in risk]
    else:
        rows = [
            json.loads(text) if status == "ok" and isinstance(text, str) else {}
            for status, text in zip(table.get("status", []), table.get("probabilities", []), strict=True)
        ]
        values = [[float(row.get(c, float("nan"))) for c in classes] for row in rows]
    frame = pd.DataFrame(values, columns=classes, dtype=float)
    frame.index = pd.Index([str(p) for p in table.get("patient_id", [])], name=cohort.spec.id)
    return frame


def predicted_labels(cohort: Cohort, table: pd.DataFrame) -> pd.Series:
    """(N,) the label at the bundle's threshold per patient (None on error rows), indexed by id."""
    labels = [
        str(label) if status == "ok" else None
        for status, label in zip(table.get("status", []), table.get("label", []), strict=True)
    ]
    index = pd.Index([str(p) for p in table.get("patient_id", [])], name=cohort.spec.id)
    name = cohort.spec.outcome.column if cohort.spec.outcome is not None else "label"
    return pd.Series(labels, index=index, name=name, dtype=object)


def evaluate(
    bundle: Bundle,
    cohort: Cohort,
    *,
    predictions: pd.DataFrame | None = None,
    split: str | None = "test",
    n_boot: int = 1000,
) -> Evaluation:
    """Calibrated evaluation of ``cohort``'s outcomes: intervals, subgroups, calibration, threshold.

    Args:
        predictions: a prediction table of this cohort by this model (``deepwe predict`` output);
            predicted now when None.
        split: ``train``, ``val``, ``test``, or None for every labelled row.
        n_boot: bootstrap resamples per interval.

    Raises:
        ValueError: the cohort has no outcome, or the predictions are not this cohort's.
    """
    from pipelines.evaluation.evaluation import evaluate_predictions

    table = predict_table(bundle, cohort) if predictions is None else predictions
    return evaluate_predictions(
        table,
        cohort,
        temperature=bundle.temperature,
        threshold=bundle.threshold,
        logit_shift=bundle.logit_shift,
        split=split,
        n_boot=n_boot,
        classes=bundle.classes,
    )


def explain(
    bundle: Bundle, cohort: Cohort, patient_id: str, *, steps: int = 32, faithfulness: bool = False
) -> PatientExplanation:
    """Attributions per modality and token, Shapley values of the modalities and the model's weights
    for one patient (what ``deepwe explain`` writes).

    Raises:
        UnknownPatient: no row has that id.
        ValueError: the patient's row has no usable modality.
    """
    from pipelines.explanations.explaining import explain_patient

    return explain_patient(bundle, cohort, patient_id, steps=steps, faithfulness=faithfulness)


class NotebookBundle(Bundle):
    """A loaded :class:`~pipelines.bundles.loading.Bundle` with the functions of this module as
    methods, for notebooks::

        bundle = load_bundle("runs/demo/model")
        bundle.predict_proba(cohort)     # (N, C) DataFrame of calibrated probabilities, index = patient id
        bundle.predict(cohort)           # (N,) labels at the bundle's decision threshold
        bundle.evaluate(cohort)          # AUROC/AUPRC with intervals, calibration, subgroups
        bundle.explain(cohort, "P-0001") # attributions, Shapley values and weights of one patient
    """

    def predictions(self, cohort: CohortLike) -> pd.DataFrame:
        """The ``deepwe predict`` table of ``cohort``: one row per input row, in input order, with
        status, calibrated risk, label, modality presence and weights, top features, neighbours.

        Raises:
            SpecError: the cohort lacks a modality or column the model reads, or repeats an id.
        """
        return predict_table(self, compatible(self, cohort))

    def predict_proba(self, cohort: CohortLike) -> pd.DataFrame:
        """(N, C) calibrated class probabilities, indexed by patient id, columns :attr:`classes`
        (NaN on rows that could not be predicted; ``predictions`` says why)."""
        loaded = compatible(self, cohort)
        return class_probabilities(self, loaded, predict_table(self, loaded))

    def predict(self, cohort: CohortLike) -> pd.Series:
        """(N,) the predicted class per patient (at :attr:`threshold` when binary), indexed by
        patient id; None on rows that could not be predicted."""
        loaded = compatible(self, cohort)
        return predicted_labels(loaded, predict_table(self, loaded))

    def evaluate(
        self,
        cohort: CohortLike,
        *,
        predictions: pd.DataFrame | None = None,
        split: str | None = "test",
        n_boot: int = 1000,
    ) -> Evaluation:
        """Calibrated evaluation against the cohort's outcomes (see :func:`evaluate`)."""
        return evaluate(self, compatible(self, cohort), predictions=predictions, split=split, n_boot=n_boot)

    def explain(
        self, cohort: CohortLike, patient_id: str, *, steps: int = 32, faithfulness: bool = False
    ) -> PatientExplanation:
        """One patient's explanation (see :func:`explain`)."""
        return explain(self, compatible(self, cohort), patient_id, steps=steps, faithfulness=faithfulness)


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu") -> NotebookBundle:
    """:func:`pipelines.bundles.loading.load_bundle`, with the notebook methods.

    Raises:
        BundleError: the bundle is altered, incomplete, of an unknown format, or its text model
            differs from the one it was trained with.
    """
    loaded = loading.load_bundle(path, device=device)
    return NotebookBundle(contents=loaded.contents, model=loaded.model, device=loaded.device)
