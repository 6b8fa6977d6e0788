"""The modality effects of a cohort: one pass of the model that re-runs only the fusion core per
coalition of modalities (modality ablation, exact Shapley values per patient, global weights), and
how often each feature is selected, against a synthetic cohort's ground truth where there is one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from deepwe_mm import SELECTED_ABOVE
from explain.shapley import exact_shapley
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort
from pipelines.cohorts.dataset import label_index
from pipelines.explanations.explaining import reference_base_rate
from pipelines.inference.batching import prediction_loader, token_modalities


@dataclass
class ModalityEffects:
    """Per-patient modality effects from coalitions of modalities (N patients, M modalities).

    Attributes:
        modalities: the M modality names.
        risk: (N,) calibrated risk with every modality the patient has.
        without: modality -> (N,) risk with that modality masked (the risk with nothing left is
            the reference base rate).
        shapley: (N, M) exact Shapley values of the risk; 0 for modalities a patient lacks.
        modality_weights: (N, M) the model's modality weights.
        feature_weights: (modality, token) -> mean weight over patients where it was observed.
        labels: (N,) class indices (-1 unlabelled).
        selections: modality -> per patient that has it, (tokens selected, tokens observed):
            selected = weight above :data:`deepwe_mm.SELECTED_ABOVE`.
    """

    modalities: list[str]
    risk: np.ndarray
    without: dict[str, np.ndarray]
    shapley: np.ndarray
    modality_weights: np.ndarray
    feature_weights: dict[tuple[str, str], float]
    labels: np.ndarray
    selections: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = field(default_factory=dict)


def modality_effects(
    bundle: Bundle, cohort: Cohort, positions: Sequence[int], *, batch_size: int = 64
) -> ModalityEffects:
    """Encode each batch once, then run the fusion core once per coalition of modalities (2^M)."""
    model, target = bundle.model, 1 if len(bundle.classes) == 2 else 0
    names = list(bundle.spec.modalities)
    base = reference_base_rate(bundle, target)
    hidden = set(token_modalities(bundle))  # word-piece names are note text
    # The report does not need the inputs' sha256: skip re-reading every file for it.
    loader, collate = prediction_loader(bundle, cohort, positions, batch_size=batch_size, hash_inputs=False)
    to_index = label_index(cohort.spec, bundle.classes)
    labels = [to_index(record.outcome) for record in loader.dataset.records]
    parts: dict[str, list] = defaultdict(list)
    weight_sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    selections: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = defaultdict(list)
    with torch.no_grad():
        for samples, _, _ in loader:
            batch = collate(samples).to(bundle.device)
            values, masks, present = model.tokens(batch)
            output = model.core(values, masks, present)
            usable = output.modality_present  # (B, M)
            blocks = model.scalar_feature_blocks(batch) if model.trees is not None else {}

            def value(subsets, values=values, masks=masks, usable=usable, blocks=blocks) -> list[np.ndarray]:
                # A row's value under S is its value under S restricted to its present modalities:
                # computed once (subsets come smallest first), copied otherwise, so that a modality
                # the patient lacks changes nothing, exactly.
                has = usable.cpu().numpy()  # (B, M)
                index = {m: k for k, m in enumerate(names)}
                known: dict[frozenset, np.ndarray] = {}
                for subset in subsets:
                    inside = np.zeros(has.shape, dtype=bool)
                    inside[:, [index[m] for m in subset]] = True
                    own = ~(inside & ~has).any(1)  # rows holding every modality of the subset
                    risk = np.full(has.shape[0], base)
                    rows = own & bool(subset)
                    if rows.any():
                        chosen = torch.as_tensor(rows, device=bundle.device)
                        flags = {
                            m: torch.as_tensor(inside[rows, k], device=bundle.device)
                            for m, k in index.items()
                        }
                        logits = model.core(
                            {m: v[chosen] for m, v in values.items()},
                            {m: v[chosen] for m, v in masks.items()},
                            flags,
                        ).logits.float()
                        evidence = model.tree_evidence({m: b[chosen] for m, b in blocks.items()}, flags)
                        if evidence is not None:
                            logits = logits + evidence
                        risk[rows] = torch.softmax(logits / bundle.temperature, 1)[:, target].cpu().numpy()
                    for row in np.flatnonzero(~own):
                        reduced = frozenset(m for m in subset if has[row, index[m]])
                        risk[row] = known[reduced][row]
                    known[subset] = risk
                return [known[subset] for subset in subsets]

            shapley, coalition = exact_shapley(names, value)
            full = coalition[frozenset(names)]
            parts["risk"].append(full)
            parts["shapley"].append(np.stack([shapley[m] for m in names], 1))
            parts["weights"].append(output.modality_weights.float().cpu().numpy())
            parts["labels"].append(np.asarray([labels[s.index] for s in samples]))
            for m in names:
                parts[f"without:{m}"].append(coalition[frozenset(names) - {m}])
                if m in hidden:
                    continue
                weights = output.feature_weights[m].float().cpu().numpy()
                observed = output.token_masks[m].cpu().numpy()
                for row, tokens in enumerate(batch.inputs[m].names):
                    seen, chosen = set(), set()
                    for t, token in enumerate(tokens[: weights.shape[1]]):
                        if observed[row, t]:
                            weight_sums[(m, token)][0] += float(weights[row, t])
                            weight_sums[(m, token)][1] += 1
                            seen.add(token)
                            if weights[row, t] > SELECTED_ABOVE:
                                chosen.add(token)
                    if seen:
                        selections[m].append((frozenset(chosen), frozenset(seen)))
    return ModalityEffects(
        modalities=names,
        risk=np.concatenate(parts["risk"]),
        without={m: np.concatenate(parts[f"without:{m}"]) for m in names},
        shapley=np.concatenate(parts["shapley"]),
        modality_weights=np.concatenate(parts["weights"]),
        feature_weights={key: total / count for key, (total, count) in weight_sums.items()},
        labels=np.concatenate(parts["labels"]),
        selections=dict(selections),
    )


def selected_shares(effects: ModalityEffects) -> dict[tuple[str, str], float]:
    """(modality, token) -> share of the patients where it was observed that selected it."""
    chosen: dict[tuple[str, str], int] = defaultdict(int)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for m, patients in effects.selections.items():
        for selected, observed in patients:
            for token in observed:
                seen[(m, token)] += 1
                chosen[(m, token)] += token in selected
    return {key: chosen[key] / count for key, count in seen.items()}


def selection_against_truth(
    patients: Sequence[tuple[frozenset[str], frozenset[str]]], informative: set[str], judged: set[str]
) -> tuple[float, float]:
    """Mean per-patient TPR and FDR of the selected tokens against the informative ones.

    Only tokens in ``judged`` (informative or noise in the ground truth) count; a patient's TPR is
    over the informative tokens it has observed (patients without any are skipped), its FDR is 0
    when it selects nothing.
    """
    tprs, fdrs = [], []
    for selected, observed in patients:
        chosen, relevant = selected & judged, observed & informative
        if relevant:
            tprs.append(len(chosen & relevant) / len(relevant))
        fdrs.append(len(chosen - informative) / len(chosen) if chosen else 0.0)
    return (float(np.mean(tprs)) if tprs else math.nan), (float(np.mean(fdrs)) if fdrs else math.nan)
