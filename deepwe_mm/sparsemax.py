"""Sparsemax (Martins & Astudillo 2016): the Euclidean projection onto the probability simplex."""

from __future__ import annotations

import torch
from torch import Tensor


def sparsemax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """Sparsemax of ``scores`` along ``dim``, over the entries where ``mask`` is True.

    ``p = max(z - tau, 0)`` with ``tau`` chosen so that ``p`` sums to 1: like softmax it gives a
    distribution, unlike softmax low scores get exactly 0. Autograd through the sort and gather
    gives the sparsemax Jacobian (the support is locally constant), so no custom backward is needed.

    Args:
        scores: (..., N, ...) real scores; entries outside ``mask`` may hold anything, NaN included.
        mask: optional bool tensor of the shape of ``scores``; False entries get exactly 0 and do
            not take part. A slice with no True entry comes out all 0 (not a distribution).
        dim: the axis to normalise over.

    Returns:
        Tensor of the shape of ``scores``: non-negative, summing to 1 along ``dim`` over the mask.
    """
    z = scores.movedim(dim, -1)
    valid = torch.ones_like(z, dtype=torch.bool) if mask is None else mask.movedim(dim, -1)
    z = torch.where(valid, z, torch.zeros((), dtype=z.dtype, device=z.device))
    n_valid = valid.sum(-1, keepdim=True)
    # Masked entries sort last; they are then zeroed so the cumulative sums only see real scores.
    ordered = torch.sort(z.masked_fill(~valid, float("-inf")), dim=-1, descending=True).values
    rank = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    in_range = rank <= n_valid
    ordered = torch.where(in_range, ordered, torch.zeros((), dtype=z.dtype, device=z.device))
    cumulative = ordered.cumsum(-1)
    support = in_range & (1 + rank * ordered > cumulative)
    k = support.sum(-1, keepdim=True).clamp_min(1)
    tau = (cumulative.gather(-1, k - 1) - 1) / k.to(z.dtype)
    p = torch.clamp(z - tau, min=0)
    p = torch.where(valid, p, torch.zeros((), dtype=z.dtype, device=z.device))
    return p.movedim(-1, dim)
