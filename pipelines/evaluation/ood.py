"""Out-of-distribution checks for prediction: values outside the training range, and a fused
embedding far from the reference cohort compared with how far training patients are from each other."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class EmbeddingDistance:
    """Cosine distance to the nearest reference patient, scored against the reference's own
    leave-one-out nearest-neighbour distances.

    Args:
        reference: (R, H) reference-cohort embeddings.
        quantile: a patient whose distance exceeds this quantile of the reference's distances is
            out of distribution.
    """

    def __init__(self, reference: Tensor, quantile: float = 0.99) -> None:
        self.reference = torch.nn.functional.normalize(reference.float(), dim=1)
        similarity = self.reference @ self.reference.T
        similarity.fill_diagonal_(-math.inf)
        self.training_distances = torch.sort(1 - similarity.max(dim=1).values).values  # (R,)
        self.quantile = quantile

    def score(self, fused: Tensor) -> tuple[Tensor, Tensor]:
        """Per patient: (B,) the share of reference distances below the patient's, and (B,) the flag."""
        unit = torch.nn.functional.normalize(fused.float().cpu(), dim=1)
        distance = 1 - (unit @ self.reference.T).max(dim=1).values
        rank = torch.searchsorted(self.training_distances, distance) / max(1, len(self.training_distances))
        return rank, rank > self.quantile


def range_violations(tabular_state: Mapping[str, Any], row: Mapping[str, Any]) -> list[str]:
    """Numeric variables whose value lies outside the training split's [min, max].

    Args:
        tabular_state: one tabular modality's preprocessing state (``preprocessing.json``).
        row: the patient's cells by column.
    """
    outside = []
    for item in tabular_state["numeric"]:
        value = row.get(item["name"])
        if value is None or item["min"] is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number < item["min"] or number > item["max"]:
            outside.append(item["name"])
    return outside
