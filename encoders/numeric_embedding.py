"""Numerical embeddings for scalar tokens: piecewise-linear encoding over training quantile bins.

A scalar ``x`` of feature ``f`` becomes ``K`` bin activations — 1 for bins wholly below ``x``, 0 for
bins above it, the fraction covered for the bin holding it — and a per-feature linear map turns them
into a token (Gorishniy, Rubachev & Babenko, "On Embeddings for Numerical Features in Tabular Deep
Learning", NeurIPS 2022). With bin edges at training quantiles the encoding is robust by
construction: a skewed variable is spread evenly over its bins, and a value beyond the outer edges
(a unit error such as pH 735) encodes like the outermost training values, so it is clipped at the
training quantiles instead of reaching the network as z = 9,000.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

DEFAULT_BINS = 8
# Initial scale of the value-independent parts of a scalar token that is read by position (bias,
# variable and flag embeddings): a large constant part would drown the value's part once the token
# is layer-normalised, and second-order effects (x1 · x2) would then be too faint to learn.
EMBEDDING_INIT_STD = 0.02
# The outer edges sit at these training quantiles: values beyond them are clipped.
CLIP_QUANTILES = (0.005, 0.995)
# A value this many inter-quartile ranges outside the middle half of the training values is
# implausible for the variable (a unit or entry error); it is counted in the training summary.
IMPLAUSIBLE_IQRS = 10.0


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin edges at evenly spaced training quantiles, per feature.

    Args:
        values: ``(N, F)`` training values, NaN where not observed.
        bins: K, bins per feature.

    Returns:
        ``(F, K + 1)`` float32 non-decreasing edges from the 0.5% to the 99.5% quantile; a feature
        never observed gets edges 0..1 (its tokens are always masked anyway).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"quantile_edges needs (N, F) values, got shape {values.shape}")
    levels = np.linspace(*CLIP_QUANTILES, bins + 1)
    edges = np.tile(np.linspace(0.0, 1.0, bins + 1), (values.shape[1], 1))
    for f in range(values.shape[1]):
        seen = values[:, f][np.isfinite(values[:, f])]
        if seen.size:
            edges[f] = np.quantile(seen, levels)
    return np.maximum.accumulate(edges, axis=1).astype(np.float32)


def implausible_counts(values: np.ndarray) -> np.ndarray:
    """Per feature, how many observed values lie more than :data:`IMPLAUSIBLE_IQRS` inter-quartile
    ranges outside the middle half of the feature's values.

    Args:
        values: ``(N, F)``, NaN where not observed.

    Returns:
        ``(F,)`` int64 counts.
    """
    counts = np.zeros(values.shape[1], dtype=np.int64)
    for f in range(values.shape[1]):
        seen = values[:, f][np.isfinite(values[:, f])]
        if seen.size < 4:
            continue
        low, high = np.quantile(seen, [0.25, 0.75])
        spread = max(high - low, 1e-12 * max(abs(high), 1.0))
        counts[f] = int(
            ((seen < low - IMPLAUSIBLE_IQRS * spread) | (seen > high + IMPLAUSIBLE_IQRS * spread)).sum()
        )
    return counts


class PiecewiseLinearEmbedding(nn.Module):
    """``(B, F)`` scalars -> ``(B, F, D)`` tokens through per-feature piecewise-linear encodings.

    The edges are a persistent buffer: they travel with the weights and are set once from the
    training split (:meth:`set_edges`). Until then they span -2..2, a fit for standardised values.

    Args:
        features: F.
        bins: K.
        dim: D, the token width.
        bias_std: scale of the initial per-feature bias. Small (the default) when tokens are read
            by position, so the value dominates each token; about 1 when tokens are pooled, where
            the bias is what tells one feature's token from another's.
    """

    edges: Tensor  # (F, K + 1)

    def __init__(self, features: int, bins: int, dim: int, bias_std: float = EMBEDDING_INIT_STD) -> None:
        super().__init__()
        if features < 1 or bins < 1 or dim < 1:
            raise ValueError(
                f"piecewise-linear embedding needs features, bins and dim >= 1, got {features}, {bins}, {dim}"
            )
        self.register_buffer("edges", torch.linspace(-2.0, 2.0, bins + 1).repeat(features, 1))
        self.weight = nn.Parameter(torch.randn(features, bins, dim) / bins**0.5)
        self.bias = nn.Parameter(torch.randn(features, dim) * bias_std)

    @torch.no_grad()
    def set_edges(self, edges: np.ndarray | Tensor) -> None:
        """Use ``edges`` ``(F, K + 1)`` (from :func:`quantile_edges` on the training split)."""
        edges = torch.as_tensor(np.asarray(edges), dtype=self.edges.dtype)
        if edges.shape != self.edges.shape:
            raise ValueError(f"edges must have shape {tuple(self.edges.shape)}, got {tuple(edges.shape)}")
        if not torch.isfinite(edges).all() or (edges.diff(dim=1) < 0).any():
            raise ValueError("edges must be finite and non-decreasing along each feature")
        self.edges.copy_(edges)

    def encode(self, x: Tensor) -> Tensor:
        """``(B, F)`` -> ``(B, F, K)`` bin activations in [0, 1] (NaN-free for finite ``x``)."""
        low = self.edges[:, :-1]
        width = (self.edges[:, 1:] - low).clamp_min(1e-6)
        return ((x.unsqueeze(-1) - low) / width).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, F)`` finite scalars -> ``(B, F, D)``."""
        # Bin by bin, not a matmul: each patient's tokens come out bit-identical whatever else is
        # in the batch (a matmul's blocking depends on the batch size), and no (B, F, K, D)
        # product is ever held in memory.
        encoded = self.encode(x)
        out: Tensor = self.bias
        for k in range(encoded.shape[-1]):
            out = out.addcmul(encoded[..., k : k + 1], self.weight[:, k])
        return out
