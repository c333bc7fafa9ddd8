"""Sparsity regularisers for learned sparse (SPLADE) training, as pure functions on a batch of
``(texts, vocabulary)`` weights, and SPLADE's quadratic warm-up of their weights.

FLOPS (Paria et al., 2020; SPLADE's document regulariser) penalises the expected cost of a sparse
dot product: the squared mean activation of each vocabulary entry over the batch, summed. L1 is
the mean summed weight of a vector. SPLADE raises each regulariser's weight quadratically
from 0 to its target over the first steps, so the model first learns to match before it is pushed
to be sparse.
"""

from __future__ import annotations

from typing import Any

import torch

from retrievekit.errors import ConfigError

__all__ = ["SparseRegularizedLoss", "flops", "l1", "nonzeros", "quadratic_warmup"]


def flops(weights: torch.Tensor) -> torch.Tensor:
    """``sum_j (mean_i |w_ij|)^2`` over a ``(texts, vocabulary)`` batch.

    >>> flops(torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])).item()   # (2^2 + 0 + 1^2)
    5.0
    """
    return torch.sum(torch.mean(torch.abs(weights), dim=0) ** 2)


def l1(weights: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_j |w_ij|`` over a ``(texts, vocabulary)`` batch.

    >>> l1(torch.tensor([[1.0, 0.0, -2.0], [3.0, 0.0, 0.0]])).item()     # (3 + 3) / 2
    3.0
    """
    return torch.mean(torch.sum(torch.abs(weights), dim=1))


def nonzeros(weights: torch.Tensor) -> torch.Tensor:
    """Mean non-zero weights per text (what training logs for queries and documents).

    >>> nonzeros(torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])).item()
    1.5
    """
    return (weights != 0).sum(dim=1).float().mean()


def quadratic_warmup(step: int, target: float, warmup_steps: int) -> float:
    """The regulariser's weight at ``step``: ``target * (step / warmup_steps)^2`` until
    ``warmup_steps``, then ``target`` (SPLADE's schedule).

    >>> [quadratic_warmup(s, 0.08, 4) for s in (0, 2, 4, 10)]
    [0.0, 0.02, 0.08, 0.08]
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return target * (step / warmup_steps) ** 2


class SparseRegularizedLoss(torch.nn.Module):
    """A ranking loss plus SPLADE's sparsity regularisers on the embeddings it encoded: FLOPS on the
    documents and ``query_regularizer`` (FLOPS or L1) on the queries, each weight warmed up
    quadratically over ``warmup_ratio`` of the run (sentence-transformers' ``SpladeLoss`` with its
    scheduler callback). The training module sets :attr:`step` and :attr:`total_steps`; the last
    batch's parts and non-zeros per text are in :attr:`last_stats` for logging.

    The regularisers need the embeddings with their graph, so the wrapped loss must encode the whole
    batch at once (not GradCache's ``cached_infonce``).
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        model: torch.nn.Module,
        *,
        document_weight: float,
        query_weight: float,
        query_regularizer: str = "flops",
        warmup_ratio: float = 1 / 3,
    ) -> None:
        super().__init__()
        if query_regularizer not in ("flops", "l1"):
            raise ConfigError(f"query_regularizer must be 'flops' or 'l1', got {query_regularizer!r}")
        if document_weight < 0 or query_weight < 0 or not 0 <= warmup_ratio <= 1:
            raise ConfigError("regulariser weights must be 0 or more and warmup_ratio from 0 to 1")
        self.loss, self.model = loss, model
        self.document_weight, self.query_weight = document_weight, query_weight
        self.query_regularizer = flops if query_regularizer == "flops" else l1
        self.warmup_ratio = warmup_ratio
        self.step, self.total_steps = 0, 1
        self.last_stats: dict[str, float] = {}

    def forward(self, batch: Any) -> torch.Tensor:
        model: Any = self.model
        model.keep_outputs, model.last_outputs = True, {}
        try:
            ranking = self.loss(batch)
        finally:
            model.keep_outputs = False
        outputs = model.last_outputs
        model.last_outputs = {}
        if set(outputs) != {"queries", "documents"}:
            raise ConfigError("the sparse regularisers need a loss that encodes queries and documents at once")
        warmup = int(self.warmup_ratio * self.total_steps)
        document_weight = quadratic_warmup(self.step, self.document_weight, warmup)
        query_weight = quadratic_warmup(self.step, self.query_weight, warmup)
        document_term = flops(outputs["documents"])
        query_term = self.query_regularizer(outputs["queries"])
        self.last_stats = {
            "ranking_loss": float(ranking.detach()),
            "document_regularizer": float(document_term.detach()),
            "query_regularizer": float(query_term.detach()),
            "document_nonzeros": float(nonzeros(outputs["documents"].detach())),
            "query_nonzeros": float(nonzeros(outputs["queries"].detach())),
        }
        return ranking + document_weight * document_term + query_weight * query_term
