"""The patient graph: GAT-style attention from a patient to its nearest stored patients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ReferenceCohort:
    """The fixed training patients that the graph attends to at inference.

    Attributes:
        embeddings: (R, H) fused embeddings (``DeepWe.embed`` in eval mode).
        ids: R pseudonymous patient ids, or None.
        outcomes: (R,) outcomes (for showing similar patients; the model does not read them), or None.
    """

    embeddings: Tensor
    ids: tuple[str, ...] | None = None
    outcomes: Tensor | None = None


class PatientGraph(nn.Module):
    """Attention from each patient to its top-k most similar candidates (GATv2-style edges).

    Neighbours are the ``top_k`` candidates with the highest cosine similarity of fused embeddings
    (a fixed, readable notion of "similar patients"). Edge weights over them are learned:
    ``e_ij = a · LeakyReLU(W_l h_i + W_r h_j)``, softmax over the k neighbours. The dynamic
    (GATv2) form matters here: with the original GAT score the ranking of neighbours would be the
    same for every patient. The weighted message ``sum_j α_ij W_r h_j`` updates the patient's
    embedding through a residual and a LayerNorm.

    Args:
        hidden: H, embedding width.
        top_k: neighbours per patient (fewer when there are fewer candidates).
        dropout: dropout on the message before the residual.
    """

    def __init__(self, hidden: int, top_k: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.top_k = top_k
        self.left = nn.Linear(hidden, hidden)
        self.right = nn.Linear(hidden, hidden)
        self.attention = nn.Parameter(torch.randn(hidden) / hidden**0.5)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, fused: Tensor, candidates: Tensor | None, self_offset: int | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Update each patient's embedding from its neighbours among ``candidates``.

        Args:
            fused: (B, H) the patients' fused embeddings.
            candidates: (R, H) embeddings to choose neighbours from, or None for none.
            self_offset: when the batch itself is among the candidates (training), patient i is
                candidate ``self_offset + i`` and is never its own neighbour.

        Returns:
            embedding (B, H); neighbours (B, K) long indices into ``candidates`` sorted by
            similarity, and their edge weights (B, K) summing to 1 — both None when there is no
            candidate, in which case the message is 0.
        """
        available = 0 if candidates is None else candidates.shape[0] - (self_offset is not None)
        k = min(self.top_k, available)
        if k < 1:
            message = torch.zeros_like(fused)
            return self.norm(fused + self.dropout(self.out(message))), None, None
        with torch.no_grad():
            similarity = F.normalize(fused, dim=-1) @ F.normalize(candidates, dim=-1).T
            if self_offset is not None:
                rows = torch.arange(fused.shape[0], device=fused.device)
                similarity[rows, self_offset + rows] = float("-inf")
            neighbours = similarity.topk(k, dim=-1).indices  # (B, K)
        projected = self.right(candidates[neighbours])  # (B, K, H)
        scores = F.leaky_relu(self.left(fused).unsqueeze(1) + projected, 0.2) @ self.attention
        weights = torch.softmax(scores, dim=-1)
        message = torch.einsum("bk,bkh->bh", weights, projected)
        return self.norm(fused + self.dropout(self.out(message))), neighbours, weights


class MemoryBank(nn.Module):
    """A ring buffer of recent detached training embeddings: the graph's neighbour pool in training.

    Not saved in the state dict (the bundle stores the reference cohort instead).

    Args:
        size: rows kept.
        hidden: H, embedding width.
    """

    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("rows", torch.zeros(size, hidden), persistent=False)
        self.count = 0
        self.position = 0

    def contents(self) -> Tensor:
        """(count, H) the stored rows (oldest slot order does not matter to the graph)."""
        return self.rows[: self.count]

    @torch.no_grad()
    def push(self, embeddings: Tensor) -> None:
        """Store (B, H) ``embeddings``, overwriting the oldest rows when full."""
        size = self.rows.shape[0]
        embeddings = embeddings.detach()[-size:].to(self.rows.dtype)
        slots = (self.position + torch.arange(embeddings.shape[0], device=self.rows.device)) % size
        self.rows[slots] = embeddings
        self.position = (self.position + embeddings.shape[0]) % size
        self.count = min(self.count + embeddings.shape[0], size)

    def clear(self) -> None:
        """Forget every stored row."""
        self.rows.zero_()
        self.count = 0
        self.position = 0
