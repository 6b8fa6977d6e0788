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
        outcomes: (R,) class indices of the reference patients' outcomes (shown as similar patients,
            and read by a graph with ``use_outcomes``), or None.
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
    same for every patient. The weighted message ``sum_j α_ij (W_r h_j + o_j)`` updates the
    patient's embedding through a residual and a LayerNorm; ``o_j`` embeds neighbour j's outcome
    when the graph uses outcomes (as in TabR, Gorishniy et al. 2024: what similar patients went on
    to have is the most direct evidence), or "unknown".

    A candidate is never a neighbour of itself: the caller excludes it by position (training, the
    batch among the candidates) or by id; and a reference row whose embedding is identical to the
    patient's is taken to be the patient (predicting a training patient must not read its own label).

    Args:
        hidden: H, embedding width.
        top_k: neighbours per patient (fewer when there are fewer candidates).
        dropout: dropout on the message before the residual.
        n_classes: C, for the outcome embedding (row 0 is "unknown", row c + 1 class c).
        use_outcomes: add the neighbours' outcome embeddings to their messages.
    """

    def __init__(
        self, hidden: int, top_k: int, dropout: float = 0.0, n_classes: int = 2, use_outcomes: bool = False
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.outcome = nn.Embedding(n_classes + 1, hidden) if use_outcomes else None
        if self.outcome is not None:
            nn.init.normal_(self.outcome.weight, std=0.02)
        self.left = nn.Linear(hidden, hidden)
        self.right = nn.Linear(hidden, hidden)
        self.attention = nn.Parameter(torch.randn(hidden) / hidden**0.5)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        fused: Tensor,
        candidates: Tensor | None,
        self_offset: int | None = None,
        outcomes: Tensor | None = None,
        excluded: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Update each patient's embedding from its neighbours among ``candidates``.

        Args:
            fused: (B, H) the patients' fused embeddings.
            candidates: (R, H) embeddings to choose neighbours from, or None for none.
            self_offset: when the batch itself is among the candidates (training), patient i is
                candidate ``self_offset + i`` and is never its own neighbour.
            outcomes: (R,) long class index of each candidate's outcome, -1 where unknown; None
                when none is known.
            excluded: (B, R) bool, candidates that must not be a patient's neighbour (the same
                patient stored earlier), or None.

        Returns:
            embedding (B, H); neighbours (B, K) long indices into ``candidates`` sorted by
            similarity, and their edge weights (B, K) summing to 1 — both None when there is no
            candidate, in which case the message is 0.
        """
        available = 0 if candidates is None else candidates.shape[0] - (self_offset is not None)
        if excluded is not None and available > 0:
            available -= int(excluded.sum(-1).max())
        k = min(self.top_k, available)
        if k < 1 or candidates is None:
            message = torch.zeros_like(fused)
            return self.norm(fused + self.dropout(self.out(message))), None, None
        with torch.no_grad():
            similarity = F.normalize(fused, dim=-1) @ F.normalize(candidates, dim=-1).T
            if self_offset is not None:
                rows = torch.arange(fused.shape[0], device=fused.device)
                similarity[rows, self_offset + rows] = float("-inf")
            else:  # an identical stored embedding is this patient
                similarity = similarity.masked_fill(similarity > 1 - 1e-6, float("-inf"))
            if excluded is not None:
                similarity = similarity.masked_fill(excluded, float("-inf"))
            neighbours = similarity.topk(k, dim=-1).indices  # (B, K)
        projected = self.right(candidates[neighbours])  # (B, K, H)
        if self.outcome is not None:
            known = (
                torch.full((candidates.shape[0],), -1, device=fused.device) if outcomes is None else outcomes
            )
            projected = projected + self.outcome(known[neighbours].long() + 1)
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

    rows: Tensor  # (size, H)
    outcomes: Tensor  # (size,)
    ids: Tensor  # (size,)

    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("rows", torch.zeros(size, hidden), persistent=False)
        self.register_buffer("outcomes", torch.full((size,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long), persistent=False)
        self.count = 0
        self.position = 0

    def contents(self) -> Tensor:
        """(count, H) the stored rows (oldest slot order does not matter to the graph)."""
        return self.rows[: self.count]

    def stored_outcomes(self) -> Tensor:
        """(count,) the stored rows' outcome class indices, -1 where unknown."""
        return self.outcomes[: self.count]

    def stored_ids(self) -> Tensor:
        """(count,) the stored rows' patient ids (dataset positions), -1 where unknown."""
        return self.ids[: self.count]

    @torch.no_grad()
    def push(self, embeddings: Tensor, outcomes: Tensor | None = None, ids: Tensor | None = None) -> None:
        """Store (B, H) ``embeddings`` with their (B,) outcomes and ids (or unknown), overwriting the
        oldest rows when full."""
        size = self.rows.shape[0]
        embeddings = embeddings.detach()[-size:].to(self.rows.dtype)
        slots = (self.position + torch.arange(embeddings.shape[0], device=self.rows.device)) % size
        self.rows[slots] = embeddings
        self.outcomes[slots] = -1 if outcomes is None else outcomes.detach()[-size:].long()
        self.ids[slots] = -1 if ids is None else ids.detach()[-size:].long()
        self.position = (self.position + embeddings.shape[0]) % size
        self.count = min(self.count + embeddings.shape[0], size)

    def clear(self) -> None:
        """Forget every stored row."""
        self.rows.zero_()
        self.outcomes.fill_(-1)
        self.ids.fill_(-1)
        self.count = 0
        self.position = 0
