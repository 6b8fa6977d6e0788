"""The top feature weights of an output row: the largest weights, ties in modality then token order."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.inference.batch_records import top_tokens


def _by_sorting(names, weights, k):
    """The plain reading: every positive weight with its name, sorted (stably) by weight."""
    found = [
        (min(1.0, w), m, names[m][t])
        for m in names
        for t, w in enumerate(weights[m].tolist())
        if w > 0 and t < len(names[m])
    ]
    found.sort(key=lambda item: -item[0])
    return [(m, token, w) for w, m, token in found[:k]]


def _weights(generator: torch.Generator) -> dict[str, torch.Tensor]:
    weights = {
        "labs": torch.rand(13, generator=generator).round(decimals=1),  # ties on purpose
        "vitals": torch.cat([torch.rand(40, generator=generator), torch.ones(1)])
        * 1.01,  # padding past names
        "empty": torch.zeros(3),
    }
    weights["labs"][:4] = 0.0
    return weights


def test_top_tokens_match_sorting_every_weight():
    generator = torch.Generator().manual_seed(5)
    names = {"labs": [f"lab{i}" for i in range(13)], "vitals": [f"v{i}" for i in range(37)], "empty": []}
    weights = _weights(generator)
    for k in (0, 1, 5, 100):
        (got,) = top_tokens(
            {m: [names[m]] for m in names}, {m: w[None, :].numpy() for m, w in weights.items()}, k
        )
        expected = _by_sorting(names, weights, k)
        assert [(t.modality, t.token) for t in got] == [(m, token) for m, token, _ in expected]
        assert [t.weight for t in got] == [w for _, _, w in expected]


def test_each_row_of_a_batch_is_chosen_as_if_alone():
    """Rows with other token counts (text) and NaN weights: each row's choice is its own."""
    generator = torch.Generator().manual_seed(11)
    rows = [_weights(generator) for _ in range(4)]
    rows[2]["vitals"][7] = float("nan")
    names = [
        {
            "labs": [f"lab{i}" for i in range(13 - j)],
            "vitals": [f"v{i}" for i in range(37 - 5 * j)],
            "empty": [],
        }
        for j in range(4)
    ]
    stacked = {m: np.stack([row[m].numpy() for row in rows]) for m in rows[0]}
    batch_names = {m: [row[m] for row in names] for m in rows[0]}
    for k in (1, 5, 60):
        got = top_tokens(batch_names, stacked, k)
        for j in range(4):
            expected = _by_sorting(names[j], rows[j], k)
            assert [(t.modality, t.token, t.weight) for t in got[j]] == expected


def test_no_modality_or_no_row():
    assert top_tokens({}, {}, 5) == []
    assert top_tokens({"labs": [["a"], ["b"]]}, {}, 5) == [[], []]
