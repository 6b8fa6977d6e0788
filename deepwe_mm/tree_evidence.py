"""Tree evidence: a fitted gradient-boosting ensemble evaluated in torch, whose log-odds the model
adds to the network's logits with a weight chosen on the validation split.

The trees are plain tensors (node arrays), so they travel in ``weights.safetensors`` with the rest
of the model and never need a pickle. They read the patient's named scalar features (a lab value, a
series channel's last value...), NaN where not observed.

Every node stores the expected raw score of the training rows that reached it (a leaf its value, a
split the count-weighted mean of its children), so a prediction splits exactly into a bias plus one
contribution per feature: the changes of expected score along the patient's path, credited to the
feature each split reads (Saabas 2014; the path attribution that TreeSHAP refines, Lundberg et al.
2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TreeShape:
    """The sizes that rebuild an empty :class:`TreeEvidence` before its buffers are loaded.

    Attributes:
        nodes: nodes of all trees together (N).
        trees: trees of all fits together (T).
        fits: fitted ensembles averaged (cross-fitting folds, F).
        features: scalar features read (P).
        outputs: raw scores per fit: 1 (binary, the positive class's log-odds) or C.
        classes: the model's classes (C).
        depth: the deepest leaf's depth: steps of the descent.
        blocks: the features each modality gives, in order (modality -> count; P in all).
    """

    nodes: int
    trees: int
    fits: int
    features: int
    outputs: int
    classes: int
    depth: int
    blocks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TreeShape:
        sizes = {key: int(values[key]) for key in cls.__dataclass_fields__ if key != "blocks"}
        return cls(**sizes, blocks={str(k): int(v) for k, v in dict(values["blocks"]).items()})


@dataclass(frozen=True)
class TreeArrays:
    """One or more fitted ensembles as flat node arrays (numpy), ready for :class:`TreeEvidence`.

    Node ``i`` of the flat arrays: ``feature[i]`` (P-space index), ``threshold[i]`` (go left when
    ``x <= threshold``), ``missing_left[i]`` (where NaN goes), ``left[i]``/``right[i]`` (flat indices;
    a leaf points to itself), ``value[i]`` (expected raw score). Tree ``t`` starts at ``roots[t]``,
    adds to output ``output[t]`` of fit ``fit[t]``; ``baseline`` (F, K) is each fit's starting score.
    """

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    output: np.ndarray
    fit: np.ndarray
    baseline: np.ndarray
    features: int
    classes: int
    depth: int
    blocks: dict[str, int] = field(default_factory=dict)

    @property
    def shape(self) -> TreeShape:
        return TreeShape(
            nodes=len(self.feature),
            trees=len(self.roots),
            fits=self.baseline.shape[0],
            features=self.features,
            outputs=self.baseline.shape[1],
            classes=self.classes,
            depth=self.depth,
            blocks=dict(self.blocks),
        )


class TreeEvidence(nn.Module):
    """Averaged raw scores of ``fits`` tree ensembles, as (B, C) logits scaled by ``weight``.

    ``weight`` is 0 until calibration sets it: training never sees the trees' output.
    """

    feature: Tensor
    threshold: Tensor
    missing_left: Tensor
    left: Tensor
    right: Tensor
    value: Tensor
    roots: Tensor
    slot: Tensor
    baseline: Tensor
    weight: Tensor

    def __init__(self, shape: TreeShape) -> None:
        super().__init__()
        self.shape = shape
        n, t = shape.nodes, shape.trees
        self.register_buffer("feature", torch.zeros(n, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("missing_left", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("left", torch.zeros(n, dtype=torch.long))
        self.register_buffer("right", torch.zeros(n, dtype=torch.long))
        self.register_buffer("value", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("roots", torch.zeros(t, dtype=torch.long))
        # Where each tree's score goes in the (F * K) per-fit outputs.
        self.register_buffer("slot", torch.zeros(t, dtype=torch.long))
        self.register_buffer("baseline", torch.zeros(shape.fits, shape.outputs, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros((), dtype=torch.float64))

    @classmethod
    def from_arrays(cls, arrays: TreeArrays) -> TreeEvidence:
        module = cls(arrays.shape)
        for name in ("feature", "threshold", "missing_left", "left", "right", "value", "roots", "baseline"):
            buffer = getattr(module, name)
            buffer.copy_(torch.from_numpy(np.asarray(getattr(arrays, name))).to(buffer.dtype))
        module.slot.copy_(torch.from_numpy(arrays.fit * arrays.shape.outputs + arrays.output))
        return module

    def _leaves(self, features: Tensor, moves: Tensor | None = None) -> Tensor:
        """(B, T) leaf index of every tree for (B, P) ``features``; with ``moves`` (B, P * S) float64
        (S = fits × outputs), each split's change of expected score is added at (feature, slot)."""
        x = features.double()
        node = self.roots.expand(x.shape[0], -1)
        slots = self.shape.fits * self.shape.outputs
        for _ in range(self.shape.depth):
            column = self.feature[node]
            read = x.gather(1, column)
            go_left = torch.where(read.isnan(), self.missing_left[node], read <= self.threshold[node])
            child = torch.where(go_left, self.left[node], self.right[node])
            if moves is not None:
                moves.scatter_add_(1, column * slots + self.slot, self.value[child] - self.value[node])
            if torch.equal(child, node):  # every tree has reached its leaf (leaves point to themselves)
                break
            node = child
        return node

    def _per_fit(self, totals: Tensor) -> Tensor:
        """(B, ..., S) scores per fit and output -> (B, ..., C) logits averaged over fits."""
        shape = self.shape
        mean = totals.reshape(*totals.shape[:-1], shape.fits, shape.outputs).mean(-2)
        if shape.outputs == 1:  # binary: log-odds of the positive class, the negative class at 0
            mean = torch.cat([torch.zeros_like(mean), mean], dim=-1)
        return mean

    def _slot_sums(self, scores: Tensor) -> Tensor:
        """(B, T) tree scores -> (B, S) each fit's and output's total, baseline included."""
        totals = self.baseline.reshape(1, -1).repeat(scores.shape[0], 1)
        return totals.index_add_(1, self.slot, scores)

    def log_odds(self, features: Tensor) -> Tensor:
        """(B, C) float64 averaged raw scores of the trees for (B, P) ``features`` (NaN = not
        observed), before ``weight``."""
        return self._per_fit(self._slot_sums(self.value[self._leaves(features)]))

    def forward(self, features: Tensor) -> Tensor:
        """(B, C) ``weight`` × :meth:`log_odds`, float32."""
        return (self.weight * self.log_odds(features)).float()

    def contributions(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Each feature's share of :meth:`log_odds`: ``(bias (B, C), per feature (B, P, C))``,
        float64, before ``weight``; ``bias + per_feature.sum(1)`` equals the log-odds."""
        shape = self.shape
        rows, slots = features.shape[0], shape.fits * shape.outputs
        moves = torch.zeros(rows, shape.features * slots, dtype=torch.float64, device=features.device)
        self._leaves(features, moves)
        bias = self._per_fit(self._slot_sums(self.value[self.roots].expand(rows, -1)))
        return bias, self._per_fit(moves.reshape(rows, shape.features, slots))
