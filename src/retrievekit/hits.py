"""The result record every index, retriever, fusion and reranker returns: one query's ids and scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Hits"]


@dataclass(frozen=True)
class Hits:
    """One query's results, best first. Higher scores are better for every similarity (``l2`` scores
    are negated squared distances).

    >>> hits = Hits.from_pairs([("b", 2.0), ("a", 1.0)])
    >>> hits.ids, hits.scores.tolist(), len(hits)
    (['b', 'a'], [2.0, 1.0], 2)
    """

    ids: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Hits:
        return cls([], np.empty(0, dtype=np.float32))

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, float]]) -> Hits:
        return cls([doc for doc, _ in pairs], np.asarray([score for _, score in pairs], dtype=np.float32))

    def top(self, k: int) -> Hits:
        """The first ``k`` results."""
        return Hits(self.ids[:k], self.scores[:k])
