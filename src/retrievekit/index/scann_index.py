"""Google's ScaNN (BET's search engine) as a dense index type. Needs ``retrievekit[scann]``.

ScaNN partitions the vectors into ``leaves`` (k-means), scores the ``leaves_to_search`` nearest
ones with anisotropic product quantisation (``dimensions_per_block`` dimensions per 4-bit code) and
rescores the best ``reorder`` exactly. The vectors are stored as this package stores every flat
index (``vectors.npy``); the searcher is built from them when first searched and rebuilt after a
load (its training is deterministic: the same vectors give the same searcher), so nothing but
``.npy`` and JSON is ever read. Below ``brute_force_below`` vectors it scores them all.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.index.base import check_count
from retrievekit.index.exact import ExactIndex

__all__ = ["ScannIndex"]


def _scann() -> Any:
    return require("scann", extra="scann", purpose="the ScaNN index")


class ScannIndex(ExactIndex):
    """ScaNN over the stored vectors; ``leaves`` defaults to about ``sqrt(n)``, ``leaves_to_search``
    to a tenth of them (at least 1)."""

    index_type = "scann"

    def __init__(
        self,
        dimension: int,
        metric: str = "dot",
        *,
        leaves: int | None = None,
        leaves_to_search: int | None = None,
        reorder: int = 100,
        dimensions_per_block: int = 2,
        training_sample: int = 100_000,
        brute_force_below: int = 2_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(dimension, metric, **kwargs)
        self.leaves = None if leaves is None else check_count("leaves", leaves)
        self.leaves_to_search = None if leaves_to_search is None else check_count("leaves_to_search", leaves_to_search)
        self.reorder = check_count("reorder", reorder)
        self.dimensions_per_block = check_count("dimensions_per_block", dimensions_per_block)
        self.training_sample = check_count("training_sample", training_sample)
        self.brute_force_below = check_count("brute_force_below", brute_force_below, 0)
        self._searcher: Any = None
        self._built_for = -1
        self._build_lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "leaves": self.leaves, "leaves_to_search": self.leaves_to_search, "reorder": self.reorder,
            "dimensions_per_block": self.dimensions_per_block, "training_sample": self.training_sample,
            "brute_force_below": self.brute_force_below,
        }  # fmt: skip

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> ScannIndex:
        return cls(**config)

    def _searcher_for(self, k: int) -> Any:
        """The searcher over the current vectors, built once per content."""
        with self._build_lock:
            n = len(self._vectors)
            if self._searcher is None or self._built_for != n:
                scann = _scann()
                distance = "squared_l2" if self.metric == "l2" else "dot_product"
                vectors = np.ascontiguousarray(self._vectors, dtype=np.float32)
                builder = scann.scann_ops_pybind.builder(vectors, max(k, 10), distance)
                if n < max(self.brute_force_below, 2):
                    builder = builder.score_brute_force()
                else:
                    leaves = min(self.leaves or max(int(np.sqrt(n)), 2), n)
                    searched = min(self.leaves_to_search or max(leaves // 10, 1), leaves)
                    sample = min(self.training_sample, n)
                    builder = builder.tree(
                        num_leaves=leaves, num_leaves_to_search=searched, training_sample_size=sample
                    )
                    threshold = 0.2 if self.metric != "l2" else float("nan")
                    builder = builder.score_ah(self.dimensions_per_block, anisotropic_quantization_threshold=threshold)
                    builder = builder.reorder(max(self.reorder, k))
                self._searcher = builder.build()
                self._built_for = n
            return self._searcher

    def _add_vectors(self, vectors: np.ndarray, start: int) -> None:
        super()._add_vectors(vectors, start)
        self._searcher = None

    def _load_payload(self, directory: Any, *, mmap: bool) -> None:
        super()._load_payload(directory, mmap=mmap)
        self._searcher = None

    def _search_vectors(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._vectors)
        dead = 0 if alive is None else int(n - alive.sum())
        depth = min(k + dead, n)  # removed items are filtered after the search: ask for enough
        searcher = self._searcher_for(depth)
        batch = np.ascontiguousarray(queries, dtype=np.float32)
        if self._is_tree():
            positions, distances = searcher.search_batched(
                batch, final_num_neighbors=depth, pre_reorder_num_neighbors=max(self.reorder, depth)
            )
        else:
            positions, distances = searcher.search_batched(batch, final_num_neighbors=depth)
        positions = np.asarray(positions, dtype=np.int64)
        scores = np.asarray(distances, dtype=np.float32)
        if self.metric == "l2":
            scores = -scores
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row in range(len(queries)):
            keep = positions[row] >= 0
            if alive is not None:
                keep &= alive[np.clip(positions[row], 0, n - 1)]
            found = positions[row][keep][:k]
            out_positions[row, : len(found)] = found
            out_scores[row, : len(found)] = scores[row][keep][:k]
        return out_scores, out_positions

    def _is_tree(self) -> bool:
        return len(self._vectors) >= max(self.brute_force_below, 2)
