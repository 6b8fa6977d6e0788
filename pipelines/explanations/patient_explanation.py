"""What an explanation holds: one patient's :class:`PatientExplanation`, with a
:class:`ModalityExplanation` per present modality, and its JSON-able summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from data_schemas import PredictionRecord
from deepwe_mm import SELECTED_ABOVE
from explain.faithfulness_measures import Curves
from pipelines.common.json_values import finite


@dataclass
class ModalityExplanation:
    """One present modality of one patient.

    Attributes:
        kind: the modality kind.
        method: how it was attributed; ``baseline``: against what.
        attribution: the raw attribution (shape of the attributed tensor, no batch dimension):
            tabular (V_num,), sensor (L, C), image (C, H, W) or (C, D, H, W), text (T, H),
            audio (n_mels, F).
        tokens: the encoder's token names (T_m).
        token_attribution: (T_m,) attribution summed into each token.
        feature_weights: (T_m,) the model's weights of those tokens (0 where unobserved).
        agreement: Spearman correlation of |token attribution| and feature weight over the
            observed tokens (NaN with fewer than 3).
        delta: IG completeness error; ``difference``: score(x) - score(baseline) it explains.
        infidelity, sensitivity: Captum's infidelity and max-sensitivity of the IG attribution
            (computed with ``faithfulness=True`` for the kinds attributed at their input: tabular,
            sensor, image; NaN otherwise).
        extras: kind-specific arrays for pictures: ``read`` (what the reader returned: the image at
            its own resolution, the standardised sensor grid, the waveform, the note), ``input``
            (the attributed encoder input), ``observed`` (sensor), ``spectrum`` (audio log-mel),
            ``words`` (text: word pieces with their attributions), ``categorical`` (tabular).
    """

    kind: str
    method: str
    baseline: str
    attribution: Tensor
    tokens: list[str]
    token_attribution: Tensor
    feature_weights: Tensor
    agreement: float
    delta: float
    difference: float
    extras: dict[str, Any] = field(default_factory=dict)
    infidelity: float = math.nan
    sensitivity: float = math.nan

    @property
    def selected(self) -> Tensor:
        """(T_m,) bool: the tokens the model selected for this patient (weight above
        :data:`deepwe_mm.SELECTED_ABOVE`)."""
        return self.feature_weights > SELECTED_ABOVE

    @property
    def relative_delta(self) -> float:
        return abs(self.delta) / abs(self.difference) if abs(self.difference) > 1e-6 else abs(self.delta)


@dataclass
class PatientExplanation:
    """Everything explained about one patient.

    Attributes:
        prediction: the same record batch prediction writes for this row.
        score_name: what the attributions explain.
        score: that score for the patient.
        modalities: present modality -> its explanation (absent modalities have none).
        shapley: modality -> Shapley value on the calibrated risk (0.0 for absent modalities).
        base_value: the empty coalition's risk (reference cohort base rate).
        coalition_values: ``"labs+notes"`` -> risk with only those modalities.
        faithfulness: deletion/insertion curves over all tokens, or None when not asked for.
        tree_score: the part of ``score`` that the model's tree evidence adds (None for a model
            without trees); the token attributions of tabular values and series statistics include
            the trees' path contributions.
    """

    prediction: PredictionRecord
    score_name: str
    score: float
    modalities: dict[str, ModalityExplanation]
    shapley: dict[str, float]
    base_value: float
    coalition_values: dict[str, float]
    steps: int
    faithfulness: Curves | None = None
    tree_score: float | None = None

    def to_dict(self, *, include_note_tokens: bool = True) -> dict[str, Any]:
        """JSON-able summary (token-level, without the raw attribution tensors).

        Args:
            include_note_tokens: keep the tokens and word pieces of notes (note text); leave them
                out for anything that is not the patient's own explanation.
        """
        return {
            "patient_id": self.prediction.patient_id,
            "row": self.prediction.row,
            "risk": self.prediction.risk,
            "label": self.prediction.label,
            "probabilities": self.prediction.probabilities,
            "score": {"name": self.score_name, "value": self.score, "tree_evidence": self.tree_score},
            "integrated_gradients_steps": self.steps,
            "shapley": {
                "target": "calibrated risk",
                "base_value": self.base_value,
                "values": self.shapley,
                "sum": sum(self.shapley.values()),
                "coalitions": self.coalition_values,
            },
            "modality_weights": self.prediction.modality_weights,
            "neighbours": [n.model_dump() for n in self.prediction.neighbours],
            "modality_errors": self.prediction.modality_errors,
            "out_of_distribution": {
                "flag": self.prediction.ood,
                "score": self.prediction.ood_score,
                "out_of_range": self.prediction.out_of_range,
            },
            "modalities": {
                name: {
                    "kind": item.kind,
                    "method": item.method,
                    "baseline": item.baseline,
                    "completeness_error": item.delta,
                    "relative_completeness_error": item.relative_delta,
                    "explained_difference": item.difference,
                    "weight_attribution_agreement": finite(item.agreement),
                    "infidelity": finite(item.infidelity),
                    "max_sensitivity": finite(item.sensitivity),
                    "tokens": [
                        {"token": token, "attribution": float(a), "feature_weight": float(w)}
                        for token, a, w in zip(
                            item.tokens,
                            item.token_attribution.tolist(),
                            item.feature_weights.tolist(),
                            strict=True,
                        )
                    ]
                    if include_note_tokens or item.kind != "text"
                    else [],
                    **(
                        {"words": [[w, a] for w, a in item.extras.get("words", [])]}
                        if item.kind == "text" and include_note_tokens
                        else {}
                    ),
                }
                for name, item in self.modalities.items()
            },
            "faithfulness": None if self.faithfulness is None else _curves_dict(self.faithfulness),
        }


def _curves_dict(curves: Curves) -> dict[str, Any]:
    return {
        "fractions": curves.fractions.tolist(),
        "deletion": curves.deletion.tolist(),
        "insertion": curves.insertion.tolist(),
        "random_deletion": curves.random_deletion.tolist(),
        "random_insertion": curves.random_insertion.tolist(),
        "auc": curves.aucs,
    }
