"""Sparsity regularisers for learned sparse (SPLADE) training, as pure functions on a batch of
``(texts, vocabulary)`` weights, and SPLADE's quadratic warm-up of their weights.

FLOPS (Paria et al., 2020; SPLADE's document regulariser) penalises the expected cost of a sparse
dot product: the squared mean activation of each vocabulary entry over the batch, summed. L1 is
the mean summed weight of a vector. SPLADE raises each regulariser's weight quadratically
from 0 to its target over the first steps, so the model first learns to match before it is pushed
to be sparse.
"""

from __future__ import annotations

import torch

__all__ = ["flops", "l1", "nonzeros", "quadratic_warmup"]


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
