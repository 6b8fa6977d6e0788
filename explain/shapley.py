"""Exact Shapley values over a patient's modalities.

With M modalities present there are 2^M coalitions; each is one forward pass of the model with the
other modalities masked out (the fusion core gives an absent modality exactly zero weight, so
masking is the model's own notion of "not there"). The values satisfy efficiency exactly: they sum
to ``v(all) - v(empty)`` (Shapley, 1953; Lundberg & Lee, NeurIPS 2017 for the feature-attribution
reading). Modalities the patient does not have are not players and get exactly 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

Coalition = frozenset[str]
ValueFunction = Callable[[list[Coalition]], list[float]]
"""Coalitions -> their values, in order (batched so that the caller can run one forward pass)."""

MAX_PLAYERS = 12


def coalitions(players: Sequence[str]) -> list[Coalition]:
    """Every subset of ``players``, the empty one first and the full one last."""
    return [
        frozenset(chosen)
        for size in range(len(players) + 1)
        for chosen in itertools.combinations(players, size)
    ]


def exact_shapley(
    players: Sequence[str], value: ValueFunction
) -> tuple[dict[str, float], dict[Coalition, float]]:
    """Shapley values of ``players`` under ``value``.

    Args:
        players: distinct names (at most :data:`MAX_PLAYERS`: 2^M evaluations).
        value: the value of each coalition, asked once for all of them.

    Returns:
        (player -> Shapley value, coalition -> value).

    Raises:
        ValueError: duplicate names or too many players.
    """
    players = list(players)
    if len(set(players)) != len(players):
        raise ValueError(f"players must be distinct, got {players}")
    if len(players) > MAX_PLAYERS:
        raise ValueError(f"exact Shapley over {len(players)} players needs 2^{len(players)} evaluations")
    subsets = coalitions(players)
    values = dict(zip(subsets, value(subsets), strict=True))
    n = len(players)
    shapley = {}
    for player in players:
        total = 0.0
        for subset in subsets:
            if player in subset:
                continue
            weight = math.factorial(len(subset)) * math.factorial(n - len(subset) - 1) / math.factorial(n)
            total += weight * (values[subset | {player}] - values[subset])
        shapley[player] = total
    return shapley, values
