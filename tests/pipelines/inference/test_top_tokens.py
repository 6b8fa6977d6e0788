"""The top feature weights of an output row: the largest weights, ties in modality then token order."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pipelines.inference.batching import _top_tokens


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


def test_top_tokens_match_sorting_every_weight():
    generator = torch.Generator().manual_seed(5)
    names = {"labs": [f"lab{i}" for i in range(13)], "vitals": [f"v{i}" for i in range(37)], "empty": []}
    weights = {
        "labs": torch.rand(13, generator=generator).round(decimals=1),  # ties on purpose
        "vitals": torch.cat([torch.rand(40, generator=generator), torch.ones(1)])
        * 1.01,  # padding past names
        "empty": torch.zeros(3),
    }
    weights["labs"][:4] = 0.0
    batch = SimpleNamespace(inputs={m: SimpleNamespace(names=[names[m]]) for m in names})
    output = SimpleNamespace(feature_weights={m: w[None, :] for m, w in weights.items()})
    for k in (0, 1, 5, 100):
        got = _top_tokens(batch, output, 0, list(names), k)
        expected = _by_sorting(names, weights, k)
        assert [(t.modality, t.token) for t in got] == [(m, token) for m, token, _ in expected]
        assert [t.weight for t in got] == [w for _, _, w in expected]
