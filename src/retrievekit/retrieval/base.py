"""The retrieval contracts: :class:`Retriever` (queries -> ranked ids), :class:`Reranker` (queries and
candidates -> re-scored candidates) and :class:`Pipeline` (retrievers -> fusion -> optional
reranker), itself a retriever. Every retriever and reranker has a ``name`` and a ``fingerprint`` of
everything that shapes its results, which is what evaluation caches key on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from retrievekit.artifacts import fingerprint_json
from retrievekit.data.records import Queries, Run, ScoredDocument
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.retrieval.fusion import FUSIONS, check_rerank_fusion, fuse

__all__ = ["Pipeline", "Reranker", "Retriever", "run_from_hits"]


def run_from_hits(query_ids: Sequence[str], hits: Sequence[Hits]) -> Run:
    """A :class:`Run` from per-query hits, in the order of ``query_ids``."""
    if len(query_ids) != len(hits):
        raise ConfigError(f"{len(query_ids)} query ids for {len(hits)} result lists")
    return Run(
        {
            qid: [ScoredDocument(d, float(s)) for d, s in zip(h.ids, h.scores, strict=True)]
            for qid, h in zip(query_ids, hits, strict=True)
        }
    )


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        raise TypeError("pass a list of query strings, not a single string")
    queries = list(queries)
    for position, query in enumerate(queries):
        if not isinstance(query, str):
            raise TypeError(f"query at position {position} is {type(query).__name__}, expected str")
    return queries


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")


class Retriever(ABC):
    """Turns query texts into ranked document ids. Subclasses implement :meth:`_search` and
    :attr:`fingerprint`; :meth:`search` checks the input once for all of them."""

    name: str = "retriever"

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of everything that shapes the results (model, index contents and settings)."""

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        """Per query, at most ``k`` results, best first."""
        _check_k(k)
        return self._search(_check_queries(queries), k)

    @abstractmethod
    def _search(self, queries: list[str], k: int) -> list[Hits]: ...

    def retrieve(self, queries: Queries, k: int = 100) -> Run:
        """Search every query of a :class:`Queries` collection; the result is a :class:`Run`."""
        return run_from_hits(queries.ids, self.search(queries.texts(), k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Reranker(ABC):
    """Re-scores the candidates of a first stage: cross-encoders, MaxSim, entity linkers, ..."""

    name: str = "reranker"

    @property
    @abstractmethod
    def fingerprint(self) -> str: ...

    def rerank(self, queries: Sequence[str], hits: Sequence[Hits], k: int = 10) -> list[Hits]:
        """For each query, its candidates re-scored, at most ``k``, best first."""
        _check_k(k)
        queries = _check_queries(queries)
        if len(queries) != len(hits):
            raise ConfigError(f"{len(queries)} queries for {len(hits)} candidate lists")
        return self._rerank(queries, list(hits), k)

    @abstractmethod
    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]: ...

    def rerank_fused(
        self, queries: Sequence[str], hits: Sequence[Hits], k: int = 10, *, top_k: int | None = None,
        fusion: str | None = None, weights: Sequence[float] | None = None, rrf_k: int = 60,
    ) -> list[Hits]:  # fmt: skip
        """A second stage: each query's first ``top_k`` candidates (all when None) in this reranker's
        order (``fusion`` None), or that order fused with the candidates' own (``rrf`` or
        ``weighted``; ``weights``: first stage, reranker); then the candidates past ``top_k`` in their
        own order, scored below (:meth:`Hits.followed_by`); at most ``k``, best first."""
        heads = [found.top(top_k) if top_k is not None else found for found in hits]
        if fusion is None:
            reranked = [found.top(k) for found in self.rerank(queries, heads, k)]
        else:
            own = self.rerank(queries, heads, max([k, *(len(found) for found in heads)]))
            reranked = [
                fuse([first, mine], method=fusion, k=k, weights=weights, rrf_k=rrf_k)
                for first, mine in zip(heads, own, strict=True)
            ]
        return [head.followed_by(found, k) for head, found in zip(reranked, hits, strict=True)]


class Pipeline(Retriever):
    """One or several retrievers -> fusion -> optional reranker, usable wherever a retriever is.

    Each retriever contributes its top ``max(k, depth)``; several lists are fused per query by
    ``fusion`` (``rrf``: reciprocal rank fusion, ``weighted``: per-query min-max normalised scores,
    weighted sum); the reranker, when given, re-scores the first ``rerank_top_k`` fused results and
    the pipeline returns its top ``k`` (with ``k`` above ``rerank_top_k``, the first stage's next
    results follow the reranked ones, in its order). With ``rerank_fusion`` (``rrf`` or ``weighted``), the
    reranker's order is fused with the first stage's over those candidates (``rerank_weights``:
    first stage, reranker) instead of replacing it: a reranker trained on little data often gains
    most as a second opinion.
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
        depth: int = 100,
        rrf_k: int = 60,
        reranker: Reranker | None = None,
        rerank_top_k: int = 100,
        rerank_fusion: str | None = None,
        rerank_weights: Sequence[float] | None = None,
        name: str | None = None,
    ) -> None:
        retrievers = list(retrievers)
        if not retrievers:
            raise ConfigError("a pipeline needs at least one retriever")
        if len(retrievers) == 1 and reranker is None:
            raise ConfigError("a pipeline of one retriever needs a reranker (or use the retriever itself)")
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        if weights is not None and len(weights) != len(retrievers):
            raise ConfigError(f"{len(weights)} weights for {len(retrievers)} retrievers")
        checked_weights = check_rerank_fusion(rerank_fusion, rerank_weights, has_reranker=reranker is not None)
        _check_k(depth)
        _check_k(rerank_top_k)
        self.retrievers = retrievers
        self.fusion, self.weights, self.depth, self.rrf_k = (
            fusion,
            None if weights is None else list(weights),
            depth,
            rrf_k,
        )
        self.reranker, self.rerank_top_k = reranker, rerank_top_k
        self.rerank_fusion = rerank_fusion
        self.rerank_weights = checked_weights
        default = "+".join(r.name for r in retrievers) + (f">{reranker.name}" if reranker else "")
        default += f"+{rerank_fusion}" if rerank_fusion else ""
        self.name = name or default

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {
                "pipeline": [r.fingerprint for r in self.retrievers],
                "fusion": self.fusion,
                "weights": self.weights,
                "depth": self.depth,
                "rrf_k": self.rrf_k,
                "reranker": self.reranker.fingerprint if self.reranker else None,
                "rerank_top_k": self.rerank_top_k,
                **self._fusion_settings(),
            }
        )

    def _fusion_settings(self) -> dict[str, object]:
        # absent without fusion, so pipelines saved before it keep their fingerprints
        if self.rerank_fusion is None:
            return {}
        return {"rerank_fusion": self.rerank_fusion, "rerank_weights": self.rerank_weights}

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        wanted = max(k, self.rerank_top_k) if self.reranker else k
        per_retriever = [r.search(queries, max(wanted, self.depth)) for r in self.retrievers]
        if len(per_retriever) == 1:
            candidates = [hits.top(wanted) for hits in per_retriever[0]]
        else:
            candidates = [
                fuse([lists[i] for lists in per_retriever], method=self.fusion, k=wanted, weights=self.weights,
                     rrf_k=self.rrf_k)
                for i in range(len(queries))
            ]  # fmt: skip
        if self.reranker is None:
            return candidates
        fusion, weights = self.rerank_fusion, self.rerank_weights
        return self.reranker.rerank_fused(
            queries, candidates, k, top_k=self.rerank_top_k, fusion=fusion, weights=weights, rrf_k=self.rrf_k
        )
