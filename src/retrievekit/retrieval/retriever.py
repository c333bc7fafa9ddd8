"""Retrievers over an index: dense (encoder + vector index) and BM25; the hybrid is a
:class:`~retrievekit.retrieval.base.Pipeline` of several; :class:`DenseReranker` re-scores any
first stage's candidates with a dense model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.vector import VectorIndex
from retrievekit.retrieval.base import Pipeline, Reranker, Retriever, run_from_hits
from retrievekit.scoring import canonical_similarity, similarity_matrix

if TYPE_CHECKING:
    from retrievekit.models.dense import DenseEncoder

__all__ = ["Bm25Retriever", "DenseReranker", "DenseRetriever", "HybridRetriever", "Retriever", "run_from_hits"]


class DenseRetriever(Retriever):
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
        if encoder.dimension != index.dimension:
            raise ConfigError(
                f"the encoder makes {encoder.dimension}-d vectors but the index holds {index.dimension}-d ones"
            )
        index.check_model(encoder.fingerprint, force=force)
        self.encoder, self.index, self.batch_size, self.name = encoder, index, batch_size, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {
                "retriever": "dense",
                "model": self.encoder.fingerprint,
                "runtime": self.encoder.runtime,
                "index": self.index.fingerprint(),
            }
        )

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        return self.index.search(self.encoder.encode_queries(queries, batch_size=self.batch_size), k)


class Bm25Retriever(Retriever):
    """Query texts against a :class:`~retrievekit.index.bm25.Bm25Index`."""

    def __init__(self, index: Bm25Index, *, name: str = "bm25") -> None:
        self.index, self.name = index, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json({"retriever": "bm25", "index": self.index.fingerprint()})

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        return self.index.search(queries, k)


class HybridRetriever(Pipeline):
    """Several retrievers fused per query (a :class:`Pipeline` without a reranker, at least two
    retrievers): ``fusion="rrf"`` (reciprocal rank fusion) or ``"weighted"`` (per-query min-max
    normalised scores, weighted sum). Each retriever contributes its top ``max(k, depth)``."""

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
        super().__init__(retrievers, fusion=fusion, weights=weights, depth=depth, rrf_k=rrf_k, name=name)


class DenseReranker(Reranker):
    """Re-scores candidates by the model's similarity between the query and each candidate's text
    (``documents`` maps ids to the text to encode: title and body, as indexed)."""

    def __init__(
        self, encoder: DenseEncoder, documents: Mapping[str, str], *, batch_size: int = 64, name: str = "dense-rerank"
    ) -> None:
        self.encoder, self.documents, self.batch_size, self.name = encoder, documents, batch_size, name
        self.similarity = canonical_similarity(encoder.similarity_fn_name)

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "dense", "model": self.encoder.fingerprint, "runtime": self.encoder.runtime}
        )

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        missing = [d for h in hits for d in h.ids if d not in self.documents]
        if missing:
            raise ConfigError(f"{len(missing)} candidate id(s) have no text to rerank with (first: {missing[0]!r})")
        query_vectors = self.encoder.encode_queries(queries, batch_size=self.batch_size)
        unique = sorted({d for h in hits for d in h.ids})
        vectors = self.encoder.encode_documents([self.documents[d] for d in unique], batch_size=self.batch_size)
        row = {d: i for i, d in enumerate(unique)}
        results = []
        for query_vector, candidates in zip(query_vectors, hits, strict=True):
            if not len(candidates):
                results.append(Hits.empty())
                continue
            rows = vectors[[row[d] for d in candidates.ids]]
            scores = similarity_matrix(query_vector[None, :], rows, self.similarity)[0]
            order = np.argsort(-scores, kind="stable")[:k]
            results.append(Hits([candidates.ids[i] for i in order], scores[order].astype(np.float32)))
        return results
