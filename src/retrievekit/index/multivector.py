"""Multi-vector (late interaction) indexes: items are documents of token vectors, scored by MaxSim.

:class:`MultiVectorIndex` is the family's half of the index contract (items and queries are
:class:`~retrievekit.outputs.MultiVectors`, or lists of ``(tokens, dim)`` arrays);
:class:`MultiVectorFlatIndex` (``multivector-flat``) scores every document exactly, in chunks of
documents with a running top-k: the oracle the approximate ``plaid`` index is measured against.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import PositionalIndex, check_count
from retrievekit.index.exact import merge_top_k
from retrievekit.outputs import MultiVectors
from retrievekit.scoring import maxsim_packed

__all__ = ["MultiVectorFlatIndex", "MultiVectorIndex", "as_multivectors"]


def as_multivectors(items: Any, dimension: int, what: str) -> MultiVectors:
    """``items`` (``MultiVectors``, one ``(tokens, dim)`` array, or a list of them) as float32
    ``MultiVectors`` of width ``dimension`` with finite values."""
    if isinstance(items, MultiVectors):
        packed = items
    elif isinstance(items, np.ndarray) and items.ndim == 2:
        packed = MultiVectors.from_list([items], items.shape[1])
    else:
        rows = [np.asarray(row, dtype=np.float32) for row in items]
        if any(row.ndim != 2 for row in rows):
            raise ConfigError(f"{what} must be (tokens, {dimension}) arrays, one per text")
        packed = MultiVectors.from_list(rows, dimension)
    if packed.vectors.shape[1] != dimension:
        raise ConfigError(f"{what} are {packed.vectors.shape[1]}-d token vectors; this index holds {dimension}-d ones")
    vectors = packed.vectors  # a float32 memory map stays one: a corpus need not fit in memory
    if vectors.dtype != np.float32 or not vectors.flags.c_contiguous:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    for start in range(0, len(vectors), 1 << 16):
        if not np.isfinite(vectors[start : start + (1 << 16)]).all():
            raise ConfigError(f"{what} contain NaN or infinite values")
    return MultiVectors(vectors, packed.offsets.astype(np.int64))


class MultiVectorIndex(PositionalIndex[MultiVectors, MultiVectors]):
    """Base of the multi-vector indexes: token vectors of ``dimension`` width, MaxSim scores."""

    family = "multivector"

    def __init__(self, dimension: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dimension = check_count("dimension", dimension)

    def config(self) -> dict[str, Any]:
        return {"dimension": self.dimension}

    def _prepare(self, items: Any, what: str) -> MultiVectors:
        return as_multivectors(items, self.dimension, what)


class MultiVectorFlatIndex(MultiVectorIndex):
    """Exact MaxSim against every stored document. Memory while searching is bounded by
    ``chunk_tokens`` document tokens x the query tokens of ``query_batch`` queries; the token vectors
    load memory-mapped."""

    index_type = "multivector-flat"

    def __init__(self, dimension: int, *, chunk_tokens: int = 65536, query_batch: int = 32, **kwargs: Any) -> None:
        super().__init__(dimension, **kwargs)
        self.chunk_tokens = check_count("chunk_tokens", chunk_tokens)
        self.query_batch = check_count("query_batch", query_batch)
        self._parts: list[MultiVectors] = []
        self._store: MultiVectors = MultiVectors.from_list([], dimension)
        self._merging = threading.Lock()  # searches share the read lock; the lazy merge runs once

    def config(self) -> dict[str, Any]:
        return super().config() | {"chunk_tokens": self.chunk_tokens, "query_batch": self.query_batch}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> MultiVectorFlatIndex:
        return cls(**config)

    @property
    def store(self) -> MultiVectors:
        """Every stored document's token vectors, removed ones included (position order)."""
        with self._merging:
            if self._parts:
                self._store = (
                    MultiVectors.concatenate([self._store, *self._parts])
                    if len(self._store)
                    else (MultiVectors.concatenate(self._parts))
                )
                self._parts = []
            return self._store

    def _add_vectors(self, vectors: MultiVectors, start: int) -> None:
        self._parts.append(vectors)

    def _chunks(self, offsets: np.ndarray) -> Iterator[tuple[int, int]]:
        """Document ranges ``[first, last)`` of about ``chunk_tokens`` tokens (at least one document)."""
        first, count = 0, len(offsets) - 1
        while first < count:
            last = int(np.searchsorted(offsets, offsets[first] + self.chunk_tokens, side="right")) - 1
            last = min(max(last, first + 1), count)
            yield first, last
            first = last

    def _search_vectors(self, queries: MultiVectors, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        store = self.store
        n = len(queries)
        best_scores = np.full((n, k), -np.inf, dtype=np.float32)
        best_positions = np.full((n, k), -1, dtype=np.int64)
        for q_start in range(0, n, self.query_batch):
            batch = queries.take(np.arange(q_start, min(n, q_start + self.query_batch)))
            run_scores = np.full((len(batch), 0), -np.inf, dtype=np.float32)
            run_positions = np.full((len(batch), 0), -1, dtype=np.int64)
            for first, last in self._chunks(store.offsets):
                offsets = store.offsets[first : last + 1]
                vectors = np.asarray(store.vectors[offsets[0] : offsets[-1]])
                scores = maxsim_packed(batch.vectors, batch.offsets, vectors, offsets - offsets[0])
                if alive is not None:
                    scores[:, ~alive[first:last]] = -np.inf
                run_scores, run_positions = merge_top_k(run_scores, run_positions, scores, first, k)
            run_positions[~np.isfinite(run_scores)] = -1
            best_scores[q_start : q_start + len(batch), : run_scores.shape[1]] = run_scores
            best_positions[q_start : q_start + len(batch), : run_positions.shape[1]] = run_positions
        return best_scores, best_positions

    def _payload_digest(self) -> str:
        store = self.store
        digest = hashlib.sha256(np.ascontiguousarray(store.offsets).tobytes())
        step = self.chunk_tokens * 4
        for start in range(0, len(store.vectors), step):
            digest.update(np.ascontiguousarray(store.vectors[start : start + step]).tobytes())
        return digest.hexdigest()

    def _save_payload(self, directory: Path) -> None:
        self.store.save(directory / "vectors")

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        self._store = MultiVectors.load(directory / "vectors", mmap=mmap)
        self._parts = []

    def _check_payload(self, directory: Path) -> None:
        store = self._store
        if len(store) != self.table.capacity or store.vectors.shape[1] != self.dimension:
            raise ArtifactError(
                f"{directory / 'vectors'}: holds {len(store)} documents of {store.vectors.shape[1]}-d vectors, "
                f"the ids and config say {self.table.capacity} of {self.dimension}-d"
            )
        if store.vectors.dtype != np.float32:
            raise ArtifactError(f"{directory / 'vectors'}: token vectors are {store.vectors.dtype}, not float32")
        step = self.chunk_tokens * 4
        for start in range(0, len(store.vectors), step):
            if not np.isfinite(store.vectors[start : start + step]).all():
                raise ArtifactError(f"{directory / 'vectors'}: NaN or infinite values from token {start} on")
