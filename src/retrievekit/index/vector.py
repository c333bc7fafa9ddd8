"""The shared half of every vector index: dimensions, metrics, ids, upserts, tombstones."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.index.base import Index, check_count
from retrievekit.scoring import canonical_similarity

__all__ = ["VectorIndex"]


class VectorIndex(Index[np.ndarray, np.ndarray]):
    """An index over vectors. ``metric`` is a similarity of :mod:`retrievekit.scoring` (``dot``, also
    spelt ``ip``; ``cosine``; ``l2``). ``cosine`` normalises vectors on the way in, then scores by dot
    product."""

    family = "dense"

    def __init__(self, dimension: int, metric: str = "dot", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        metric = canonical_similarity(metric)
        self.dimension = check_count("dimension", dimension)
        self.metric = metric

    def config(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "metric": self.metric}

    def _prepare(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ConfigError(f"{what} must have shape (n, {self.dimension}), got {vectors.shape}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ConfigError(f"{what} contain NaN or infinite values")
        if self.metric == "cosine":
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def add(self, ids: Sequence[str], items: np.ndarray, *, upsert: bool = False) -> None:
        """Add vectors ``(n, dimension)`` under ``ids``. An existing id is an error unless ``upsert=True``
        replaces it."""
        ids = list(ids)
        vectors = self._prepare(items, "vectors")
        if len(ids) != len(vectors):
            raise ConfigError(f"{len(ids)} ids for {len(vectors)} vectors")
        if not ids:
            return
        with self.lock.writing():
            self.table.check_new(ids, upsert=upsert)
            self._add_vectors(vectors, self.table.capacity)
            self.table.append(ids)

    def search(self, queries: np.ndarray, k: int = 10) -> list[Hits]:
        """Per query, at most ``k`` (id, score) pairs, best first. ``k`` above the size returns all items."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        queries = self._prepare(queries, "query vectors")
        with self.lock.reading():
            if len(self) == 0:
                return [Hits.empty() for _ in range(len(queries))]
            k = min(k, len(self))
            alive = self.table.alive.copy() if self.table.has_tombstones else None
            scores, positions = self._search_vectors(queries, k, alive)
        results = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            keep = row_positions >= 0
            results.append(Hits(self.table.lookup(row_positions[keep]), row_scores[keep].astype(np.float32)))
        return results

    @abstractmethod
    def _add_vectors(self, vectors: np.ndarray, start: int) -> None:
        """Store prepared vectors at positions ``start, start + 1, ...``."""

    @abstractmethod
    def _search_vectors(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, positions)`` of shape (n, k), best first; position -1 pads missing slots.
        ``alive`` (when not None) marks the positions that may be returned."""
