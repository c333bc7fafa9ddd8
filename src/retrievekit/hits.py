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

    def followed_by(self, rest: Hits, k: int) -> Hits:
        """These results, then those of ``rest`` not among them, in ``rest``'s order, at most ``k``:
        ``rest``'s scores are shifted to sit below these (their gaps kept), so the list stays best first
        (a reranked head, then the first stage's tail).

        >>> head, first = Hits(["b", "a"], np.array([9.0, 7.0])), Hits(["a", "b", "c", "d"], np.array([.9, .8, .5, .4]))
        >>> merged = head.followed_by(first, 4); merged.ids, merged.scores.round(2).tolist()
        (['b', 'a', 'c', 'd'], [9.0, 7.0, 6.0, 5.9])
        """
        seen = set(self.ids)
        kept = [i for i, doc in enumerate(rest.ids) if doc not in seen][: max(0, k - len(self))]
        if not kept:
            return self.top(k)
        tail = np.asarray(rest.scores, dtype=np.float64)[kept]
        floor = float(self.scores.min()) - 1.0 if len(self) else float(tail[0])
        scores = np.concatenate([self.scores, floor - (tail[0] - tail)]).astype(self.scores.dtype)
        return Hits([*self.ids, *(rest.ids[i] for i in kept)], scores)
