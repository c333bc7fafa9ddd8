"""The one batching helper: length-sorted batches, by count and optionally by token budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["plan_batches"]


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Group item indices into batches of similar length, longest first.

    A batch holds at most ``batch_size`` items and, with ``max_tokens``, at most that many padded
    tokens (``items * longest``), so short texts travel in larger batches. Padding is dynamic: each
    batch is padded only to its own longest item.

    >>> [b.tolist() for b in plan_batches([3, 10, 4, 9], batch_size=2)]
    [[1, 3], [2, 0]]
    >>> [b.tolist() for b in plan_batches([3, 10, 4, 9], batch_size=4, max_tokens=20)]
    [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches
