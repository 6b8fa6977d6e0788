"""The prediction records of one forward pass, built for the whole batch at once.

Every tensor of the model output is moved to numpy once per batch, and the top feature weights and
the most similar reference patients are chosen for all rows with one sort each; what is left per
row is putting the already chosen values into its :class:`~data_schemas.PredictionRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from data_schemas import NeighbourWeight, PredictionRecord, TokenWeight


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def top_tokens(
    names: Mapping[str, Sequence[Sequence[str]]], weights: Mapping[str, np.ndarray], k: int
) -> list[list[TokenWeight]]:
    """Per row, the ``k`` tokens of largest feature weight above 0 (weights capped at 1; ties in
    modality, then token order).

    Args:
        names: modality -> per row, its token names (a row may have fewer names than columns:
            columns past its names are padding and never chosen).
        weights: modality -> ``(B, T_m)`` float32 feature weights, modalities in output order.
        k: tokens kept per row.

    Returns:
        B lists of at most ``k`` :class:`TokenWeight`.
    """
    modalities = list(weights)
    rows = len(next(iter(names.values()))) if names else 0
    if not modalities or rows == 0:
        return [[] for _ in range(rows)]
    widths = [weights[m].shape[1] for m in modalities]
    every = np.minimum(np.concatenate([weights[m] for m in modalities], axis=1), np.float32(1.0))
    owner = np.repeat(np.arange(len(modalities)), widths)  # (T,) the modality of each column
    local = np.arange(every.shape[1]) - np.repeat(np.cumsum([0, *widths[:-1]]), widths)
    named = np.stack([[len(names[m][j]) for m in modalities] for j in range(rows)])  # (B, M)
    positive = (local[None, :] < named[:, owner]) & (every > 0)
    # A stable sort of the negated weights keeps equal weights in column order, and puts every
    # column that cannot be chosen (padding, 0, NaN) after the positive ones.
    order = np.argsort(np.where(positive, -every, np.inf), axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(positive, order, axis=1)
    values = np.take_along_axis(every, order, axis=1).tolist()
    found = []
    for j in range(rows):
        found.append(
            [
                TokenWeight(
                    modality=modalities[owner[t]],
                    token=names[modalities[owner[t]]][j][local[t]],
                    weight=values[j][i],
                )
                for i, t in enumerate(order[j].tolist())
                if chosen[j, i]
            ]
        )
    return found


def _neighbours(bundle: Any, output: Any, k: int) -> list[list[NeighbourWeight]]:
    """Per row, the ``k`` reference patients of largest edge weight (none without a graph)."""
    rows = output.logits.shape[0]
    if output.neighbours is None:
        return [[] for _ in range(rows)]
    order = torch.argsort(output.neighbour_weights, dim=1, descending=True, stable=True)[:, :k]
    index = output.neighbours.gather(1, order).cpu()
    weight = output.neighbour_weights.gather(1, order).float().cpu().tolist()
    ids, classes = bundle.contents.reference_ids, bundle.classes
    labels = bundle.contents.reference.get("labels")
    outcome = [[None] * index.shape[1]] * rows if labels is None else labels.cpu()[index].tolist()
    return [
        [
            NeighbourWeight(
                reference_id=ids[i], weight=w, outcome=None if label is None else classes[int(label)]
            )
            for i, w, label in zip(index[j].tolist(), weight[j], outcome[j], strict=True)
        ]
        for j in range(rows)
    ]


def ok_records(
    bundle: Any,
    batch: Any,
    output: Any,
    probabilities: torch.Tensor,
    ood: tuple[torch.Tensor, torch.Tensor],
    rows: Sequence[tuple[Any, str, list[str]]],
    options: Any,
) -> list[PredictionRecord]:
    """The ``ok`` records of a forward pass, one per batch row.

    Args:
        bundle: the loaded model bundle (classes, threshold, reference cohort, sha256).
        batch: the collated :class:`~pipelines.cohorts.dataset.Batch` (token names per row).
        output: the model's output for ``batch``.
        probabilities: ``(B, C)`` calibrated class probabilities.
        ood: ``(B,)`` out-of-distribution ranks and ``(B,)`` flags.
        rows: per batch row, its sample, the sha256 of its input and its out-of-range variables.
        options: the :class:`~pipelines.inference.batching.PredictOptions` (how many tokens and
            neighbours to keep).
    """
    classes, modalities = bundle.classes, output.modalities
    present = output.modality_present.cpu().tolist()
    weights = _numpy(output.modality_weights).tolist()
    chances = _numpy(probabilities).tolist()
    ranks, flags = ood[0].cpu().tolist(), ood[1].cpu().tolist()
    tokens = top_tokens(
        {m: batch.inputs[m].names for m in modalities},
        {m: _numpy(output.feature_weights[m]) for m in modalities},
        options.top_features,
    )
    neighbours = _neighbours(bundle, output, options.neighbours)
    threshold = bundle.threshold if bundle.threshold is not None else 0.5
    model_sha256 = bundle.sha256  # read from the manifest file: once per batch, not per row
    records = []
    for j, (sample, digest, outside) in enumerate(rows):
        if len(classes) == 2:
            risk = chances[j][1]
            label = classes[1] if risk >= threshold else classes[0]
        else:
            risk, label = None, classes[int(np.argmax(chances[j]))]
        records.append(
            PredictionRecord(
                row=sample.row,
                patient_id=sample.patient_id,
                status="ok",
                risk=risk,
                probabilities={c: round(p, 6) for c, p in zip(classes, chances[j], strict=True)},
                label=label,
                modality_present={m: bool(present[j][k]) for k, m in enumerate(modalities)},
                modality_weights={m: round(weights[j][k], 6) for k, m in enumerate(modalities)},
                modality_errors=sample.errors,
                skipped_lines=sample.skipped,
                top_features=tokens[j],
                neighbours=neighbours[j],
                ood=bool(flags[j]) or bool(outside),
                ood_score=round(float(ranks[j]), 6),
                out_of_range=outside,
                model_sha256=model_sha256,
                input_sha256=digest,
            )
        )
    return records
