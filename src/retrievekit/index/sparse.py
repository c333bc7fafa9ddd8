"""The ``sparse`` index: an inverted index over learned sparse vectors (SPLADE, BGE-M3's lexical
weights), exact top-k by sparse dot product.

Documents are kept as CSR rows (what :meth:`SparseIndex.compact` and the fingerprint read) and as
inverted lists: per vocabulary id, the documents holding it and their weights (CSC). A query walks
the lists of its own terms only, accumulating scores in a compiled loop (numba), so its cost is the
postings of its terms, not the corpus size. Only documents sharing a term with the query are
returned. ``remove`` leaves tombstones; ``compact`` drops them; ``save`` writes ``.npy`` files that
``load`` memory-maps.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import Index, PositionalIndex, check_count
from retrievekit.index.exact import top_k
from retrievekit.outputs import SparseVectors

__all__ = ["SparseIndex", "SparseVectorIndex", "as_sparse_vectors"]

_ARRAYS = ("indptr", "indices", "values", "term_offsets", "postings", "posting_values")


def kernels() -> Any:
    """The compiled loop (:mod:`retrievekit.index.sparse_kernels`), or an error naming the extra."""
    require("numba", extra="sparse", purpose="the sparse index's compiled search")
    from retrievekit.index import sparse_kernels

    return sparse_kernels


def as_sparse_vectors(items: Any, vocab_size: int, what: str) -> SparseVectors:
    """``items`` (``SparseVectors``, or a ``(n, vocab)`` dense array) checked against ``vocab_size``:
    term ids in range and finite float32 weights."""
    if isinstance(items, SparseVectors):
        vectors = items
    elif isinstance(items, np.ndarray) and items.ndim == 2:
        vectors = SparseVectors.from_dense(items)
    else:
        raise ConfigError(f"{what} must be SparseVectors (or a (texts, vocabulary) array), not {type(items).__name__}")
    if vectors.vocab_size != vocab_size:
        raise ConfigError(f"{what} are over a vocabulary of {vectors.vocab_size}; this index holds {vocab_size}")
    indices = np.asarray(vectors.indices)
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= vocab_size):
        raise ConfigError(f"{what} hold a term id outside the vocabulary of {vocab_size}")
    values = np.asarray(vectors.values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ConfigError(f"{what} contain NaN or infinite weights")
    return SparseVectors(np.asarray(vectors.indptr, dtype=np.int64), indices.astype(np.int32), values, vocab_size)


class SparseVectorIndex(Index[SparseVectors, SparseVectors]):
    """The sparse family's index contract: items and queries are :class:`SparseVectors` over a
    vocabulary of ``vocab_size`` terms, scored by sparse dot product. The in-process inverted index
    (:class:`SparseIndex`) and Milvus's sparse field (``milvus-sparse``) implement it."""

    family = "sparse"

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = check_count("vocab_size", vocab_size)

    @property
    def dimension(self) -> int:
        """The vocabulary size (what a model's vectors must match)."""
        return self.vocab_size

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def _prepare(self, items: Any, what: str) -> SparseVectors:
        return as_sparse_vectors(items, self.vocab_size, what)

    def vectors_of(self, ids: list[str]) -> SparseVectors:
        """The stored vectors of ``ids`` (present ones), in that order."""
        raise ConfigError(f"a {self.index_type} index does not return its stored vectors")


class SparseIndex(SparseVectorIndex, PositionalIndex[SparseVectors, SparseVectors]):
    """Exact sparse dot-product search over an inverted index (see the module description)."""

    index_type = "sparse"
    revision = 2  # 2: equal scores in position order (top_k)

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        self._rows: list[SparseVectors] = []
        self._arrays: dict[str, np.ndarray] = {
            "indptr": np.zeros(1, np.int64),
            "indices": np.empty(0, np.int32),
            "values": np.empty(0, np.float32),
        }
        self._lists_built = False
        # searches share the index's read lock; merging added rows and building the lists happen
        # lazily inside them, once, under this lock
        self._materialize = threading.RLock()

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> SparseIndex:
        return cls(**config)

    # ---- storage -----------------------------------------------------------------------------
    @property
    def documents(self) -> SparseVectors:
        """Every stored document's vector, removed ones included (position order)."""
        with self._materialize:
            if self._rows:
                a = self._arrays
                stored = SparseVectors(np.asarray(a["indptr"]), np.asarray(a["indices"]), np.asarray(a["values"]),
                                       self.vocab_size)  # fmt: skip
                merged = SparseVectors.concatenate([stored, *self._rows])
                self._arrays.update(indptr=merged.indptr, indices=merged.indices, values=merged.values)
                self._rows = []
            a = self._arrays
            return SparseVectors(a["indptr"], a["indices"], a["values"], self.vocab_size)

    def vectors_of(self, ids: list[str]) -> SparseVectors:
        """The stored vectors of ``ids`` (present ones), in that order."""
        with self.lock.reading():
            return self.documents.take(self.table.positions_of(ids, self.index_type))

    def _add_vectors(self, vectors: SparseVectors, start: int) -> None:
        self._rows.append(vectors)
        self._lists_built = False

    def _inverted_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per term: the offsets into the documents holding it and their weights (CSC)."""
        with self._materialize:
            if not self._lists_built:
                documents = self.documents
                owners = np.repeat(np.arange(len(documents), dtype=np.int32), documents.nnz)
                order = np.argsort(documents.indices, kind="stable")  # by term, documents ascending within
                counts = np.bincount(documents.indices, minlength=self.vocab_size)
                self._arrays["term_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                self._arrays["postings"] = owners[order]
                self._arrays["posting_values"] = np.asarray(documents.values)[order]
                self._lists_built = True
            a = self._arrays
            return a["term_offsets"], a["postings"], a["posting_values"]

    def _keep_positions(self, alive: np.ndarray) -> None:
        kept = self.documents.take(alive)
        self._arrays = {"indptr": kept.indptr, "indices": kept.indices, "values": kept.values}
        self._lists_built = False

    # ---- searching ---------------------------------------------------------------------------
    def _search_vectors(
        self, queries: SparseVectors, k: int, alive: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        term_offsets, postings, posting_values = self._inverted_lists()
        count = len(self._arrays["indptr"]) - 1
        scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions_out = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros(count, dtype=np.float32)
        seen = np.zeros(count, dtype=np.bool_)
        touched = np.empty(count, dtype=np.int64)
        accumulate = kernels().accumulate
        for row in range(len(queries)):
            terms, weights = queries.row(row)
            reached = accumulate(
                terms.astype(np.int64), weights.astype(np.float32), term_offsets, postings, posting_values, scores,
                seen, touched,
            )  # fmt: skip
            documents = touched[:reached]
            if alive is not None:
                documents = documents[alive[documents]]
            if len(documents):
                values, columns = top_k(scores[documents][None, :], min(k, len(documents)))
                scores_out[row, : values.shape[1]] = values[0]
                positions_out[row, : values.shape[1]] = documents[columns[0]]
            scores[touched[:reached]] = 0.0
            seen[touched[:reached]] = False
        return scores_out, positions_out

    # ---- persistence -------------------------------------------------------------------------
    def _payload_digest(self) -> str:
        documents = self.documents
        digest = hashlib.sha256()
        for name, array in (("indptr", documents.indptr), ("indices", documents.indices), ("values", documents.values)):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def _save_payload(self, directory: Path) -> None:
        self.documents  # noqa: B018 (merges pending rows)
        self._inverted_lists()
        for name in _ARRAYS:
            np.save(directory / f"sparse_{name}.npy", np.asarray(self._arrays[name]), allow_pickle=False)

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        self._arrays = {
            name: np.load(directory / f"sparse_{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            for name in _ARRAYS
        }
        self._rows = []
        self._lists_built = True

    def _check_payload(self, directory: Path) -> None:
        a = self._arrays
        indptr, nnz = a["indptr"], len(a["indices"])
        problems = []
        if len(indptr) != self.table.capacity + 1 or (len(indptr) and (indptr[0] != 0 or indptr[-1] != nnz)):
            problems.append(f"{len(indptr) - 1} documents' offsets for {self.table.capacity} ids and {nnz} weights")
        if len(a["values"]) != nnz or len(a["postings"]) != nnz or len(a["posting_values"]) != nnz:
            problems.append("the weight and posting arrays disagree in length")
        if len(a["term_offsets"]) != self.vocab_size + 1 or (len(a["term_offsets"]) and a["term_offsets"][-1] != nnz):
            problems.append(f"{len(a['term_offsets']) - 1} term offsets for a vocabulary of {self.vocab_size}")
        if nnz and (int(np.max(a["indices"])) >= self.vocab_size or int(np.min(a["indices"])) < 0):
            problems.append("a term id lies outside the vocabulary")
        if nnz and (int(np.max(a["postings"])) >= self.table.capacity or int(np.min(a["postings"])) < 0):
            problems.append("a posting points past the documents")
        if a["indices"].dtype != np.int32 or a["postings"].dtype != np.int32 or a["values"].dtype != np.float32:
            problems.append("unexpected array types")
        if problems:
            raise ArtifactError(f"{directory}: the sparse payload does not match its manifest: {'; '.join(problems)}")
