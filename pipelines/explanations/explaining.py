"""Per-patient explanations: attributions per modality and per token, Shapley contributions, weights.

:func:`explain_patient` is what ``deepwe explain``, the report and the dashboard call. It reads the
patient's row exactly as batch prediction does, then, with the model in eval mode and float32:

- attributes, per present modality, the score (the calibrated log-odds of the positive class for a
  binary outcome; the predicted class's scaled logit otherwise) to that modality's input with the
  other modalities held at the patient's values (:data:`ATTRIBUTED`: which tensor, which baseline);
- sums the attribution of every input element into the encoder token it feeds (a lab value, a word
  piece, an image region, a time window), so that attributions sit next to the model's own feature
  weights, and measures their rank agreement;
- computes exact Shapley values of the calibrated risk over the present modalities (absent ones get
  exactly 0); the empty coalition's value is the base rate of the reference cohort, because the model
  refuses to predict from nothing;
- optionally, faithfulness: deletion/insertion curves over the tokens against random orders.

``method="gradient_x_input"`` replaces Integrated Gradients by gradient x input on the same input,
layer and baseline (the faithfulness benchmark compares the two).
"""

from __future__ import annotations

import numpy as np
import torch

from data_schemas import PredictionRecord
from explain.attribution import INTEGRATED_GRADIENTS
from explain.shapley import Coalition, exact_shapley
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import Batch, PatientCollator, PatientSample
from pipelines.explanations.modality_attribution import explain_modalities, robustness, token_curves
from pipelines.explanations.patient_explanation import PatientExplanation
from pipelines.explanations.patient_scorer import PatientScorer, positive_index
from pipelines.inference.batching import PredictionDataset, PredictOptions, predict_batch


class UnknownPatient(KeyError):
    """The patient id is not in the cohort's table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def patient_position(cohort: Cohort, patient_id: str) -> int:
    """The 0-based table position of ``patient_id``.

    Raises:
        UnknownPatient: no row has that id (the message does not list other ids).
    """
    ids = cohort.table[cohort.spec.id].astype(str).str.strip()
    hits = np.flatnonzero(ids.to_numpy() == str(patient_id).strip())
    if hits.size == 0:
        raise UnknownPatient(f"no patient with id {patient_id!r} in {cohort.table_path.name}")
    return int(hits[0])


def read_patient(
    bundle: Bundle, cohort: Cohort, position: int
) -> tuple[PatientSample, Batch, PredictionRecord]:
    """The patient's sample (what the readers returned), its one-row batch on the bundle's device
    and its prediction record."""
    records = list(cohort.records([position]))
    table = cohort.table.iloc[[position]].reset_index(drop=True)
    dataset = PredictionDataset(bundle, cohort, records, table)
    sample, digest, outside = dataset[0]
    collate = PatientCollator(bundle.model.encoders)
    prediction = predict_batch(
        bundle, collate, [sample], [digest], [outside], PredictOptions(), bundle.embedding_distance
    )[0]
    return sample, collate([sample]).to(bundle.device), prediction


def explain_patient(
    bundle: Bundle,
    cohort: Cohort,
    patient_id: str,
    *,
    steps: int = 32,
    faithfulness: bool = False,
    faithfulness_steps: int = 10,
    method: str = INTEGRATED_GRADIENTS,
) -> PatientExplanation:
    """Attributions, Shapley values and weights for one patient (see the module docstring).

    Args:
        method: ``"integrated_gradients"`` or ``"gradient_x_input"`` (``steps`` is then unused).

    Raises:
        UnknownPatient: the id is not in the cohort.
        ValueError: the patient's row has no usable modality (the reason is the prediction's error).
    """
    position = patient_position(cohort, patient_id)
    sample, batch, prediction = read_patient(bundle, cohort, position)
    if prediction.status != "ok":
        raise ValueError(f"patient {patient_id!r} cannot be explained: {prediction.error}")
    model = bundle.model
    model.eval()
    target = positive_index(bundle, prediction)

    score = PatientScorer(bundle, batch, target)

    with torch.no_grad():
        output = model(batch)
    explained, targets = explain_modalities(bundle, sample, batch, score, output, steps=steps, method=method)
    present = list(explained)
    shapley, base, values = modality_shapley(score, present)
    curves = None
    if faithfulness:
        curves = token_curves(batch, explained, targets, score, steps=faithfulness_steps)
        for name, item in explained.items():
            if targets[name].layer is None and item.kind != "text":
                item.infidelity, item.sensitivity = robustness(score, batch, name, targets[name], item, steps)
    with torch.no_grad():
        patient_score = float(score({})[0])
    return PatientExplanation(
        prediction=prediction,
        score_name="calibrated log-odds of " + repr(bundle.classes[target])
        if len(bundle.classes) == 2
        else f"temperature-scaled logit of {bundle.classes[target]!r}",
        score=patient_score,
        modalities=explained,
        shapley={m: shapley.get(m, 0.0) for m in output.modalities},
        base_value=base,
        coalition_values={"+".join(sorted(c)) or "(none)": v for c, v in values.items()},
        steps=steps,
        faithfulness=curves,
        tree_score=score.tree_score(),
    )


def modality_shapley(
    score: PatientScorer, present: list[str]
) -> tuple[dict[str, float], float, dict[Coalition, float]]:
    """Exact Shapley values of the calibrated risk of the scorer's class over the ``present`` modalities.

    Returns:
        (modality -> value, the empty coalition's value, coalition -> risk).
    """
    bundle = score.bundle
    base = reference_base_rate(bundle, score.target)
    device = score.batch.labels.device

    def value(subsets: list[Coalition]) -> list[float]:
        filled = [s for s in subsets if s]
        keep = {m: torch.tensor([m in s for s in filled], device=device) for m in present}
        with torch.no_grad():
            logits = score.logits({}, len(filled), present=keep).float() / bundle.temperature
            risks = iter(torch.softmax(logits, dim=1)[:, score.target].tolist())
        return [next(risks) if s else base for s in subsets]

    shapley, values = exact_shapley(present, value)
    return shapley, base, values


def reference_base_rate(bundle: Bundle, target: int) -> float:
    """Share of the reference cohort in class ``target`` (1 / C without stored labels)."""
    labels = bundle.contents.reference.get("labels")
    if labels is None or labels.numel() == 0:
        return 1.0 / len(bundle.classes)
    return float((labels == target).float().mean())
