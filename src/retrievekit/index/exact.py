"""Exact search: chunked matrix products with a running top-k, the reference for every ANN index."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.errors import ArtifactError
from retrievekit.index.base import check_count, storage_for
from retrievekit.index.vector import PositionalVectorIndex
from retrievekit.scoring import dot

__all__ = ["ExactIndex", "merge_top_k", "top_k"]


_GROUP_SIZE = 32  # columns per group whose maximum bounds the k-th best score from below (see top_k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` of a score matrix, best first, equal scores in column order:
    ``(values, column indices)``.

    A floor for each row's k-th best score comes first: split the columns into groups (every
    ``len // 32``-th column together), take each group's maximum; the k-th best of those maxima
    belongs to k distinct columns, so at most the k-th best score. Only the few columns at or above
    it are sorted. Narrow matrices take the exact k-th value as the floor.

    >>> values, columns = top_k(np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2)
    >>> columns.tolist(), values.tolist()
    ([[1, 2], [0, 2]], [[0.9, 0.5], [3.0, 2.0]])
    >>> top_k(np.array([[1.0, 2.0, 2.0, 2.0]]), 2)[1].tolist()
    [[1, 2]]
    """
    rows, width = scores.shape
    k = min(k, width)
    if not rows or not k:
        return np.empty((rows, k), scores.dtype), np.empty((rows, k), np.int64)
    groups = width // _GROUP_SIZE
    if groups >= 2 * k:
        maxima = scores[:, : groups * _GROUP_SIZE].reshape(rows, _GROUP_SIZE, groups).max(axis=1)
        floor = np.partition(maxima, groups - k, axis=1)[:, groups - k]
    else:
        floor = np.partition(scores, width - k, axis=1)[:, width - k]
    flat = np.flatnonzero(scores >= floor[:, None])  # row-major: rows ascending, columns ascending in each
    row_of, column_of = np.divmod(flat, width)
    counts = np.bincount(row_of, minlength=rows)
    slots = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    candidates = np.zeros((rows, int(counts.max())), dtype=np.int64)
    values = np.full(candidates.shape, -np.inf, dtype=scores.dtype)  # padding sorts after every real value
    candidates[row_of, slots] = column_of
    values[row_of, slots] = scores[row_of, column_of]
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(candidates, order, axis=1)


def merge_top_k(
    run_scores: np.ndarray, run_positions: np.ndarray, scores: np.ndarray, start: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """A running top ``k`` (best first) updated with the scores of the next chunk, whose column 0 is
    position ``start``: the one chunk-merge of every exact search.

    >>> s, p = merge_top_k(np.empty((1, 0)), np.empty((1, 0), dtype=np.int64), np.array([[0.2, 0.7]]), 0, 2)
    >>> merge_top_k(s, p, np.array([[0.5, 0.1]]), 2, 2)[1].tolist()
    [[1, 2]]
    """
    values, columns = top_k(scores, k)
    merged_scores = np.concatenate([run_scores, values], axis=1)
    merged_positions = np.concatenate([run_positions, columns + start], axis=1)
    best, order = top_k(merged_scores, k)
    return best, np.take_along_axis(merged_positions, order, axis=1)


class ExactIndex(PositionalVectorIndex):
    """Brute-force search. Memory during search is bounded by ``query_batch x chunk_size`` scores,
    never queries x documents; vectors load memory-mapped."""

    index_type = "flat"
    revision = 2  # 2: equal scores in position order (top_k)

    def __init__(
        self, dimension: int, metric: str = "dot", *, chunk_size: int = 65536, query_batch: int = 256, **kwargs: Any
    ) -> None:
        super().__init__(dimension, metric, **kwargs)
        self.chunk_size = check_count("chunk_size", chunk_size)
        self.query_batch = check_count("query_batch", query_batch)
        self._vectors = np.empty((0, dimension), dtype=np.float32)
        self._rows: np.ndarray | None = None  # writable storage with room to grow; _vectors is its filled head
        self._sq_norms = np.empty(0, dtype=np.float32)  # l2 only: each vector's squared norm
        self._norm_rows = np.empty(0, dtype=np.float32)  # l2 only: their storage, as _rows for _vectors

    def config(self) -> dict[str, Any]:
        return super().config() | {"chunk_size": self.chunk_size, "query_batch": self.query_batch}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> ExactIndex:
        return cls(**config)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` more vectors, so adding them in chunks copies none already stored."""
        with self.lock.writing():
            self._storage_for(len(self._vectors) + check_count("rows", rows, 0), geometric=False)

    def _storage_for(self, needed: int, *, geometric: bool) -> np.ndarray:
        """Writable storage for at least ``needed`` rows (:func:`~retrievekit.index.base.storage_for`);
        l2's squared norms move to storage of the same size whenever the rows do."""
        rows = storage_for(self._rows, self._vectors, needed, geometric=geometric)
        if rows is not self._rows:
            filled = len(self._vectors)
            self._rows, self._vectors = rows, rows[:filled]
            if self.metric == "l2":
                self._norm_rows = storage_for(None, self._sq_norms, len(rows), geometric=False)
                self._sq_norms = self._norm_rows[:filled]
        return rows

    def _add_vectors(self, vectors: np.ndarray, start: int) -> None:
        filled, end = len(self._vectors), len(self._vectors) + len(vectors)
        rows = self._storage_for(end, geometric=True)
        rows[filled:end] = vectors
        self._vectors = rows[:end]
        if self.metric == "l2":
            self._norm_rows[filled:end] = np.einsum("ij,ij->i", vectors, vectors)
            self._sq_norms = self._norm_rows[:end]

    def _search_vectors(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        best_scores = np.full((n, k), -np.inf, dtype=np.float32)
        best_positions = np.full((n, k), -1, dtype=np.int64)
        for q_start in range(0, n, self.query_batch):
            q = queries[q_start : q_start + self.query_batch]
            run_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
            run_positions = np.full((len(q), 0), -1, dtype=np.int64)
            for start in range(0, len(self._vectors), self.chunk_size):
                chunk = self._vectors[start : start + self.chunk_size]
                scores = dot(q, chunk)
                if self.metric == "l2":  # -||q - d||^2 = 2 q.d - ||d||^2 - ||q||^2
                    scores = 2 * scores - self._sq_norms[start : start + len(chunk)]
                if alive is not None:
                    scores[:, ~alive[start : start + len(chunk)]] = -np.inf
                run_scores, run_positions = merge_top_k(run_scores, run_positions, scores, start, k)
            if self.metric == "l2":
                run_scores = run_scores - np.einsum("ij,ij->i", q, q)[:, None]
            run_positions[~np.isfinite(run_scores)] = -1
            best_scores[q_start : q_start + len(q), : run_scores.shape[1]] = run_scores
            best_positions[q_start : q_start + len(q), : run_positions.shape[1]] = run_positions
        return best_scores, best_positions

    def stored_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored rows of ``ids``, in that order (a copy, also from a memory-mapped index)."""
        with self.lock.reading():
            return np.array(self._vectors[self.table.positions_of(ids, self.index_type)], dtype=np.float32)

    def _payload_digest(self) -> str:
        digest = hashlib.sha256()
        for start in range(0, len(self._vectors), self.chunk_size):
            digest.update(np.ascontiguousarray(self._vectors[start : start + self.chunk_size]).tobytes())
        return digest.hexdigest()

    def _save_payload(self, directory: Path) -> None:
        np.save(directory / "vectors.npy", np.asarray(self._vectors), allow_pickle=False)

    def _check_payload(self, directory: Path) -> None:
        vectors = self._vectors
        expected = (self.table.capacity, self.dimension)
        if vectors.dtype != np.float32 or vectors.shape != expected:
            raise ArtifactError(
                f"{directory / 'vectors.npy'}: holds {vectors.dtype} vectors of shape {vectors.shape}, "
                f"the ids and config say float32 {expected}"
            )
        for start in range(0, len(vectors), self.chunk_size):
            if not np.isfinite(vectors[start : start + self.chunk_size]).all():
                raise ArtifactError(f"{directory / 'vectors.npy'}: NaN or infinite values from row {start} on")

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        self._vectors = np.load(directory / "vectors.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        self._rows = None  # read-only when memory-mapped: the next add copies into new storage
        if self.metric == "l2":
            self._sq_norms = np.einsum("ij,ij->i", self._vectors, self._vectors)
