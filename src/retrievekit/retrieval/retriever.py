"""Retrievers: something that turns query texts into ranked ids. Dense (encoder + vector index),
BM25, and hybrids that fuse several retrievers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from retrievekit.data.records import Queries, Run, ScoredDocument
from retrievekit.errors import ConfigError
from retrievekit.index.base import Hits
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.vector import VectorIndex
from retrievekit.models.dense import DenseEncoder
from retrievekit.retrieval.fusion import FUSIONS, fuse

__all__ = ["Bm25Retriever", "DenseRetriever", "HybridRetriever", "Retriever", "run_from_hits"]


@runtime_checkable
class Retriever(Protocol):
    name: str

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]: ...


def run_from_hits(query_ids: Sequence[str], hits: Sequence[Hits]) -> Run:
    return Run(
        {
            qid: [ScoredDocument(d, float(s)) for d, s in zip(h.ids, h.scores, strict=True)]
            for qid, h in zip(query_ids, hits, strict=True)
        }
    )


class _RunMixin:
    def retrieve(self, queries: Queries, k: int = 100) -> Run:
        """Search every query of a :class:`Queries` collection; the result is a :class:`Run`."""
        return run_from_hits(queries.ids, self.search(queries.texts(), k))


class DenseRetriever(_RunMixin):
    """An encoder plus a vector index built with the same model (checked by fingerprint unless ``force``)."""

    def __init__(
        self,
        encoder: DenseEncoder,
        index: VectorIndex,
        *,
        force: bool = False,
        batch_size: int = 64,
        name: str = "dense",
    ) -> None:
        if encoder.dimension != index.dimension and not force:
            raise ConfigError(
                f"the encoder makes {encoder.dimension}-d vectors but the index holds {index.dimension}-d ones"
            )
        index.check_model(encoder.fingerprint, force=force)
        self.encoder, self.index, self.batch_size, self.name = encoder, index, batch_size, name

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        return self.index.search(self.encoder.encode_queries(list(queries), batch_size=self.batch_size), k)


class Bm25Retriever(_RunMixin):
    def __init__(self, index: Bm25Index, *, name: str = "bm25") -> None:
        self.index, self.name = index, name

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        return self.index.search(list(queries), k)


class HybridRetriever(_RunMixin):
    """Fuse several retrievers per query: ``fusion="rrf"`` (reciprocal rank fusion) or ``"weighted"``
    (per-query min-max normalised scores, weighted sum). Each retriever contributes its top ``depth``."""

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
        depth: int = 100,
        rrf_k: int = 60,
        name: str = "hybrid",
    ) -> None:
        if len(retrievers) < 2:
            raise ConfigError("a hybrid needs at least two retrievers")
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.retrievers, self.fusion, self.weights, self.depth, self.rrf_k, self.name = (
            list(retrievers),
            fusion,
            weights,
            depth,
            rrf_k,
            name,
        )

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        queries = list(queries)
        per_retriever = [r.search(queries, max(k, self.depth)) for r in self.retrievers]
        return [
            fuse([lists[i] for lists in per_retriever], method=self.fusion, k=k, weights=self.weights, rrf_k=self.rrf_k)
            for i in range(len(queries))
        ]
