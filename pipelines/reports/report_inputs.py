"""What the audit report is built from: predict (unless given), evaluate, explain a few patients,
measure the modality effects and run the model-randomisation check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from explain.faithfulness_measures import rank_agreement
from pipelines.api import evaluate, predict_table
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.evaluation.evaluation import Evaluation
from pipelines.explanations.explaining import explain_patient
from pipelines.explanations.patient_explanation import PatientExplanation
from pipelines.reports.modality_effects import ModalityEffects, modality_effects


@dataclass
class ReportInputs:
    """What the report is built from (kept for tests and for the dashboard's audit page)."""

    bundle: Bundle
    cohort: Cohort
    predictions: pd.DataFrame
    evaluation: Evaluation
    effects: ModalityEffects
    positions: list[int]
    examples: list[PatientExplanation]
    faithfulness: list[PatientExplanation]
    randomisation: float | None


def gather(
    bundle: Bundle,
    cohort: Cohort,
    *,
    predictions: pd.DataFrame | None = None,
    split: str | None = "test",
    n_boot: int = 1000,
    examples: int = 3,
    faithfulness_patients: int = 8,
    steps: int = 32,
    progress: Callable[[str], None] = lambda message: None,
) -> ReportInputs:
    """Predict (unless ``predictions`` are given), evaluate, and explain a few patients."""
    if predictions is None:
        progress("predicting")
        predictions = predict_table(bundle, cohort)
    progress("evaluating")
    evaluation = evaluate(bundle, cohort, predictions=predictions, split=split, n_boot=n_boot)
    ok = predictions[predictions["status"] == "ok"]
    chosen_split = evaluation.split
    positions = [
        int(row) - 1 for row in ok["row"] if chosen_split is None or cohort.split_of(int(row)) == chosen_split
    ]
    progress("modality effects")
    effects = modality_effects(bundle, cohort, positions)
    ids = ok.set_index("row")["patient_id"].astype(str)
    by_risk = ok[ok["row"].isin([p + 1 for p in positions])].sort_values("risk", kind="stable")
    picked: list[str] = []
    if len(by_risk):
        threshold = bundle.threshold if bundle.threshold is not None else 0.5
        near = (by_risk["risk"] - threshold).abs().idxmin()
        for index in (by_risk.index[-1], by_risk.index[0], near):
            pid = str(by_risk.at[index, "patient_id"])
            if pid not in picked:
                picked.append(pid)
    progress("example explanations")
    explained = [
        explain_patient(bundle, cohort, pid, steps=steps, faithfulness=True) for pid in picked[:examples]
    ]
    progress("faithfulness")
    others = [ids[p + 1] for p in positions if ids[p + 1] not in picked][
        : max(0, faithfulness_patients - len(explained))
    ]
    faithful = explained + [
        explain_patient(bundle, cohort, pid, steps=steps, faithfulness=True) for pid in others
    ]
    randomisation = (
        randomisation_check(
            bundle, cohort, picked[0], steps=steps, trained=explained[0] if explained else None
        )
        if picked
        else None
    )
    return ReportInputs(
        bundle, cohort, predictions, evaluation, effects, positions, explained, faithful, randomisation
    )


def randomisation_check(
    bundle: Bundle, cohort: Cohort, patient_id: str, *, steps: int, trained: PatientExplanation | None = None
) -> float:
    """Rank correlation of token attributions between the model and the same model with every
    trained weight tensor's entries randomly permuted (their scale kept, what was learnt destroyed;
    the model-randomisation test of Adebayo et al., NeurIPS 2018). Near 0 means the attributions
    depend on what the model learnt; near 1 that they mostly echo the input. The weights are put
    back afterwards. ``trained``: the patient's explanation by the trained model, when already made."""
    if trained is None:
        trained = explain_patient(bundle, cohort, patient_id, steps=steps)
    model = bundle.model
    original = {name: value.detach().clone() for name, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            for parameter in model.parameters():
                flat = parameter.view(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)])
        shuffled = explain_patient(bundle, cohort, patient_id, steps=steps)
    finally:
        model.load_state_dict(original)
    first = torch.cat([trained.modalities[m].token_attribution for m in trained.modalities])
    second = torch.cat([shuffled.modalities[m].token_attribution for m in trained.modalities])
    return rank_agreement(first, second)


def labelled_risk(inputs: ReportInputs) -> tuple[np.ndarray, np.ndarray]:
    """(n,) class indices and (n,) risks of the labelled patients of the modality effects."""
    effects = inputs.effects
    chosen = effects.labels >= 0
    return effects.labels[chosen], effects.risk[chosen]
