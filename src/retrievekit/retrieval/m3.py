"""BGE-M3 retrieval: one model, one pass per text, searched by any of FlagEmbedding's score modes.

The corpus's :class:`~retrievekit.models.m3.M3Output` goes into the family indexes that exist for
each part: an exact dense index, the ``sparse`` inverted index and (for the multi-vector mode) the
``multivector-flat`` index. A single mode searches its index exactly. A fused mode
(``sparse+dense``, ``colbert+sparse+dense``) takes the union of the dense and sparse indexes' top
``depth`` candidates and scores each exactly in every part it fuses (as FlagEmbedding's evaluations
rerank a first stage's candidates with the fused score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.models.m3_format import DEFAULT_WEIGHTS, M3_MODES
from retrievekit.retrieval.base import Retriever

if TYPE_CHECKING:
    from retrievekit.models.m3 import M3Encoder, M3Output

__all__ = ["M3Retriever"]


class M3Retriever(Retriever):
    """A BGE-M3 model over a corpus it encoded (``ids`` and their ``corpus`` outputs), searched by
    ``mode`` (one of :data:`~retrievekit.models.m3_format.M3_MODES`) with ``weights`` (dense,
    sparse, colbert) for the fused modes; those score the union of the dense and sparse top ``depth``."""

    def __init__(
        self,
        encoder: M3Encoder,
        ids: Sequence[str],
        corpus: M3Output,
        *,
        mode: str = "colbert+sparse+dense",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        depth: int = 100,
        batch_size: int = 32,
        name: str = "m3",
    ) -> None:
        from retrievekit.index.exact import ExactIndex
        from retrievekit.index.multivector import MultiVectorFlatIndex
        from retrievekit.index.sparse import SparseIndex
        from retrievekit.models.m3 import check_weights

        if mode not in M3_MODES:
            raise ConfigError(f"unknown BGE-M3 mode {mode!r}; choose one of {', '.join(M3_MODES)}")
        if len(ids) != len(corpus):
            raise ConfigError(f"{len(ids)} ids for {len(corpus)} encoded documents")
        if depth < 1:
            raise ConfigError(f"depth must be at least 1, got {depth}")
        self.encoder, self.corpus, self.mode, self.depth = encoder, corpus, mode, depth
        self.weights = check_weights(weights)
        self.batch_size, self.name = batch_size, name
        self._rows = {doc_id: row for row, doc_id in enumerate(ids)}
        model = encoder.fingerprint
        self._dense = ExactIndex(encoder.dimension, "dot", model_fingerprint=model)
        self._dense.add(list(ids), np.asarray(corpus.dense, dtype=np.float32))
        self._sparse = SparseIndex(encoder.vocab_size, model_fingerprint=model)
        self._sparse.add(list(ids), corpus.sparse)
        self._colbert = None
        if mode == "colbert":
            self._colbert = MultiVectorFlatIndex(encoder.colbert_dimension, model_fingerprint=model)
            self._colbert.add(list(ids), corpus.colbert)

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {
                "retriever": "m3",
                "model": self.encoder.fingerprint,
                "runtime": self.encoder.runtime,
                "mode": self.mode,
                "weights": list(self.weights),
                "depth": self.depth,
                "dense": self._dense.fingerprint(),
                "sparse": self._sparse.fingerprint(),
            }
        )

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        encoded = self.encoder.encode_queries(queries, batch_size=self.batch_size)
        if self.mode == "dense":
            return self._dense.search(encoded.dense, k)
        if self.mode == "sparse":
            return self._sparse.search(encoded.sparse, k)
        if self._colbert is not None:  # MaxSim ranks as M3's score does; its scale is the mean over query vectors
            hits = self._colbert.search(encoded.colbert, k)
            lengths = np.maximum(encoded.colbert.lengths, 1)
            return [Hits(h.ids, (h.scores / lengths[i]).astype(np.float32)) for i, h in enumerate(hits)]
        return self._fused(encoded, k)

    def _fused(self, encoded: M3Output, k: int) -> list[Hits]:
        from retrievekit.models.m3 import fuse_m3_scores

        depth = max(k, self.depth)
        dense_hits = self._dense.search(encoded.dense, depth)
        sparse_hits = self._sparse.search(encoded.sparse, depth)
        needed = [part for part in ("dense", "sparse", "colbert") if part in self.mode.split("+")]
        results = []
        for i, (by_dense, by_sparse) in enumerate(zip(dense_hits, sparse_hits, strict=True)):
            candidates = list(dict.fromkeys([*by_dense.ids, *by_sparse.ids]))
            if not candidates:
                results.append(Hits.empty())
                continue
            rows = np.fromiter((self._rows[c] for c in candidates), dtype=np.int64, count=len(candidates))
            parts = self.encoder.part_scores(encoded.take(np.array([i])), self.corpus.take(rows), needed=needed)
            scores = fuse_m3_scores(**parts, weights=self.weights)[self.mode][0]
            order = np.argsort(-scores, kind="stable")[:k]
            results.append(Hits([candidates[j] for j in order], scores[order].astype(np.float32)))
        return results
