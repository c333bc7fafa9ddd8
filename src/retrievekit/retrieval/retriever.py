"""Retrievers over an index: dense (encoder + vector index) and BM25; the hybrid is a
:class:`~retrievekit.retrieval.base.Pipeline` of several; :class:`DenseReranker` re-scores any
first stage's candidates with a dense model."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.vector import VectorIndex
from retrievekit.retrieval.base import Pipeline, Reranker, Retriever, run_from_hits
from retrievekit.scoring import canonical_similarity, maxsim_ragged, similarity_matrix

if TYPE_CHECKING:
    from retrievekit.index.multivector import MultiVectorIndex
    from retrievekit.models.colbert import ColbertEncoder
    from retrievekit.models.dense import DenseEncoder

__all__ = [
    "Bm25Retriever",
    "DenseReranker",
    "DenseRetriever",
    "EncodedCandidatesReranker",
    "EncoderIndexRetriever",
    "HybridRetriever",
    "MaxSimReranker",
    "MultiVectorRetriever",
    "Retriever",
    "run_from_hits",
]


class EncoderIndexRetriever(Retriever):
    """A model plus an index built with the same model (checked by fingerprint unless ``force``):
    queries are encoded, then searched. ``kind`` names the family in the fingerprint."""

    kind = "dense"

    def __init__(self, encoder: Any, index: Any, *, force: bool, batch_size: int, name: str) -> None:
        if encoder.dimension != index.dimension:
            raise ConfigError(
                f"the model makes {encoder.dimension}-d vectors but the index holds {index.dimension}-d ones"
            )
        index.check_model(encoder.fingerprint, force=force)
        self.encoder, self.index, self.batch_size, self.name = encoder, index, batch_size, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {
                "retriever": self.kind,
                "model": self.encoder.fingerprint,
                "runtime": self.encoder.runtime,
                "index": self.index.fingerprint(),
            }
        )

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        hits: list[Hits] = self.index.search(self.encoder.encode_queries(queries, batch_size=self.batch_size), k)
        return hits


class DenseRetriever(EncoderIndexRetriever):
    """A dense encoder plus a vector index built with the same model."""

    def __init__(
        self, encoder: DenseEncoder, index: VectorIndex, *, force: bool = False, batch_size: int = 64,
        name: str = "dense",
    ) -> None:  # fmt: skip
        super().__init__(encoder, index, force=force, batch_size=batch_size, name=name)


class SparseRetriever(EncoderIndexRetriever):
    """A SPLADE model plus a ``sparse`` index built with the same model."""

    kind = "sparse"

    def __init__(
        self, encoder: Any, index: Any, *, force: bool = False, batch_size: int = 32, name: str = "sparse"
    ) -> None:
        super().__init__(encoder, index, force=force, batch_size=batch_size, name=name)


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


class EncodedCandidatesReranker(Reranker):
    """Re-scores candidates by encoding the query and each candidate's text with ``encoder`` and
    scoring the pair (``documents`` maps ids to the text to encode: title and body, as indexed).
    A family says how a query's vectors score candidates' vectors in :meth:`_scores`."""

    def __init__(self, encoder: Any, documents: Mapping[str, str], *, batch_size: int, name: str) -> None:
        self.encoder, self.documents, self.batch_size, self.name = encoder, documents, batch_size, name

    @abstractmethod
    def _scores(self, query: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray: ...

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        missing = [d for h in hits for d in h.ids if d not in self.documents]
        if missing:
            raise ConfigError(f"{len(missing)} candidate id(s) have no text to rerank with (first: {missing[0]!r})")
        query_vectors = self.encoder.encode_queries(queries, batch_size=self.batch_size)
        unique = sorted({d for h in hits for d in h.ids})
        vectors = self.encoder.encode_documents([self.documents[d] for d in unique], batch_size=self.batch_size)
        row = {d: i for i, d in enumerate(unique)}
        results = []
        for query, candidates in zip(query_vectors, hits, strict=True):
            if not len(candidates):
                results.append(Hits.empty())
                continue
            scores = np.asarray(self._scores(query, [vectors[row[d]] for d in candidates.ids]))
            order = np.argsort(-scores, kind="stable")[:k]
            results.append(Hits([candidates.ids[i] for i in order], scores[order].astype(np.float32)))
        return results


class DenseReranker(EncodedCandidatesReranker):
    """Re-scores candidates by the dense model's similarity between the query and each candidate's text."""

    def __init__(
        self, encoder: DenseEncoder, documents: Mapping[str, str], *, batch_size: int = 64, name: str = "dense-rerank"
    ) -> None:
        super().__init__(encoder, documents, batch_size=batch_size, name=name)
        self.similarity = canonical_similarity(encoder.similarity_fn_name)

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "dense", "model": self.encoder.fingerprint, "runtime": self.encoder.runtime}
        )

    def _scores(self, query: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        scores: np.ndarray = similarity_matrix(query[None, :], np.stack(candidates), self.similarity)[0]
        return scores


class MultiVectorRetriever(EncoderIndexRetriever):
    """A ColBERT model over a multi-vector index (``multivector-flat`` or ``plaid``) built with it."""

    kind = "multivector"

    def __init__(
        self, encoder: ColbertEncoder, index: MultiVectorIndex, *, force: bool = False, batch_size: int = 32,
        name: str = "colbert",
    ) -> None:  # fmt: skip
        super().__init__(encoder, index, force=force, batch_size=batch_size, name=name)


class MaxSimReranker(EncodedCandidatesReranker):
    """Re-scores any first stage's candidates by MaxSim with a ColBERT model (PyLate's
    ``rank.rerank``): queries and the candidates' texts are encoded, then scored exactly."""

    def __init__(
        self, encoder: ColbertEncoder, documents: Mapping[str, str], *, batch_size: int = 32,
        name: str = "colbert-rerank",
    ) -> None:  # fmt: skip
        super().__init__(encoder, documents, batch_size=batch_size, name=name)

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "maxsim", "model": self.encoder.fingerprint, "runtime": self.encoder.runtime}
        )

    def _scores(self, query: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        return maxsim_ragged(query, candidates)
