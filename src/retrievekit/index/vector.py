"""The dense family's index contract (dimension, metric, checked vectors) and its positional half.

:class:`VectorIndex` is what every dense index is, wherever its vectors live: in this process
(:class:`PositionalVectorIndex`: flat, HNSW, IVF-PQ, ScaNN, with ids, upserts and tombstones kept
by :class:`~retrievekit.index.base.IdTable`) or in a database (LanceDB, Milvus), which keeps its own
ids. Retrievers, builders and the server accept any :class:`VectorIndex`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.index.base import Index, PositionalIndex, check_count
from retrievekit.scoring import canonical_similarity

__all__ = ["PositionalVectorIndex", "VectorIndex"]


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

    def reserve(self, rows: int) -> None:
        """A hint that ``rows`` more vectors are coming (:func:`~retrievekit.index.build.fill_index`
        gives it), so an index that stores them in this process can allocate once; a no-op here."""

    def stored_vectors(self, ids: Sequence[str]) -> np.ndarray | None:
        """The vectors the index scores for ``ids``, one row per id in that order (after ``cosine``'s
        normalisation), so a caller need not keep its own copy; ``None`` from an index that keeps no
        exact copy of them (quantised, or a database)."""
        return None

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


class PositionalVectorIndex(VectorIndex, PositionalIndex[np.ndarray, np.ndarray]):
    """A vector index whose engine runs in this process and keeps items at integer positions."""
