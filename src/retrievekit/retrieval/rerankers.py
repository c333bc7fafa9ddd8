"""Rerankers that read the query and each candidate's text together (cross-encoders)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

import numpy as np

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.retrieval.base import Reranker

if TYPE_CHECKING:
    from retrievekit.models.cross_encoder import CrossEncoder

__all__ = ["CascadeReranker", "CrossEncoderReranker"]


class CrossEncoderReranker(Reranker):
    """Re-scores any first stage's candidates with a cross-encoder: every ``(query, candidate text)``
    pair of all the queries is scored in one call, so the engine batches pairs of similar length
    across queries. ``documents`` maps ids to the text to score (title and body, as indexed).

    ``memo``, when given, keeps each ``(query, document id)`` score and is consulted first: an
    evaluation that reranks the same candidates twice (alone and fused with the first stage) scores
    them once. It lives as long as the mapping the caller passes."""

    def __init__(
        self,
        model: CrossEncoder,
        documents: Mapping[str, str],
        *,
        batch_size: int = 32,
        name: str = "rerank",
        memo: MutableMapping[tuple[str, str], float] | None = None,
    ) -> None:
        if model.num_labels != 1:
            raise ConfigError(f"reranking needs one score per pair; {model.name!r} has {model.num_labels} labels")
        self.model, self.documents, self.batch_size, self.name = model, documents, batch_size, name
        self.memo = memo

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "cross_encoder", "model": self.model.fingerprint, "runtime": self.model.runtime}
        )

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        missing = [d for h in hits for d in h.ids if d not in self.documents]
        if missing:
            raise ConfigError(f"{len(missing)} candidate id(s) have no text to rerank with (first: {missing[0]!r})")
        keys = [(query, d) for query, h in zip(queries, hits, strict=True) for d in h.ids]
        memo = self.memo if self.memo is not None else {}
        todo = list(dict.fromkeys(key for key in keys if key not in memo))
        if todo:
            pairs = [(query, self.documents[d]) for query, d in todo]
            fresh = self.model.predict(pairs, batch_size=self.batch_size, show_progress=len(pairs) > 1000)
            memo.update(zip(todo, np.asarray(fresh, dtype=np.float64).tolist(), strict=True))
        scores = np.asarray([memo[key] for key in keys], dtype=np.float64)
        results, start = [], 0
        for candidates in hits:
            own = scores[start : start + len(candidates)]
            start += len(candidates)
            order = np.argsort(-own, kind="stable")[:k]
            results.append(Hits([candidates.ids[i] for i in order], own[order].astype(np.float32)))
        return results


class CascadeReranker(Reranker):
    """Two rerankers in a row: ``fast`` re-scores every candidate, then ``exact`` re-scores the
    fast one's best ``top_k`` and orders them; the rest stay below in the fast one's order.

    The common use is one cross-encoder twice: its int8 graph over all of the first stage's
    candidates, its float32 model over the few that decide the top of the ranking (the rescoring
    step of int8 and binary vector search, applied to a reranker). ``exact`` scores ``top_k`` pairs
    per query more, so it costs ``top_k / candidates`` of a float32 pass. Scores: ``exact``'s for
    the head; the tail keeps ``fast``'s, lowered by one constant where needed so that every tail
    score is below the head's lowest (the order is never changed by the shift)."""

    def __init__(self, fast: Reranker, exact: Reranker, *, top_k: int = 10, name: str = "rerank") -> None:
        if top_k < 1:
            raise ConfigError(f"the cascade's top_k must be at least 1, got {top_k}")
        self.fast, self.exact, self.top_k, self.name = fast, exact, top_k, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "cascade", "fast": self.fast.fingerprint, "exact": self.exact.fingerprint, "top_k": self.top_k}
        )

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        ordered = self.fast.rerank(queries, hits, max([k, *map(len, hits)]))
        heads = self.exact.rerank(queries, [h.top(self.top_k) for h in ordered], self.top_k)
        results = []
        for head, whole in zip(heads, ordered, strict=True):
            tail = Hits(whole.ids[len(head) :], whole.scores[len(head) :].astype(np.float64))
            if len(head) and len(tail):
                gap = float(tail.scores[0]) - float(head.scores[-1])
                if gap >= 0:  # lower the tail as one block: its order is kept, and it stays below
                    tail = Hits(tail.ids, tail.scores - gap - 1e-3)
            results.append(
                Hits(head.ids + tail.ids, np.concatenate([head.scores, tail.scores]).astype(np.float32)).top(k)
            )
        return results
