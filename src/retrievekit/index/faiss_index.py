"""Approximate indexes on FAISS: HNSW and IVF with product quantisation. Needs ``retrievekit[faiss]``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import check_count
from retrievekit.index.vector import PositionalVectorIndex

__all__ = ["HnswIndex", "IvfPqIndex"]

_FILE = "index.faiss"


def _faiss():
    return require("faiss", extra="faiss", purpose="HNSW and IVF-PQ indexes")


class _FaissIndex(PositionalVectorIndex):
    """FAISS holds the vectors at positions 0..n-1; ids and tombstones live in the id table.
    Removed positions are filtered inside FAISS with an id selector, so ``k`` results still come back."""

    def __init__(self, dimension: int, metric: str = "dot", **kwargs: Any) -> None:
        super().__init__(dimension, metric, **kwargs)
        self._index: Any = None  # a faiss.Index (faiss ships no type information)

    @property
    def _faiss_metric(self) -> int:
        faiss = _faiss()
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _build(self):
        raise NotImplementedError

    def _ensure(self, vectors: np.ndarray) -> None:
        if self._index is None:
            self._index = self._build()

    def _add_vectors(self, vectors: np.ndarray, start: int) -> None:
        self._ensure(vectors)
        if self._index.ntotal != start:
            raise ConfigError(f"internal: FAISS holds {self._index.ntotal} vectors, expected {start}")
        self._index.add(vectors)

    def _search_params(self, alive: np.ndarray | None):
        raise NotImplementedError

    def _search_vectors(self, queries: np.ndarray, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = self._search_params(alive)
        bitmap = None
        if alive is not None:
            # a local: FAISS holds only a pointer, and this call's bitmap must not be another thread's
            bitmap = np.packbits(alive, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bitmap))
        distances, positions = self._index.search(queries, k, params=params)
        del bitmap  # alive until the search returned
        scores = -distances if self.metric == "l2" else distances
        return scores, positions.astype(np.int64)

    def _payload_digest(self) -> str:
        if self._index is None:
            return ""
        digest = hashlib.sha256()
        for part in self._stored_parts():
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()

    def _stored_parts(self) -> Iterator[np.ndarray]:
        """What decides every score, as arrays that do not depend on how the index was loaded."""
        yield self._index.reconstruct_n(0, self._index.ntotal)

    def _check_payload(self, directory: Path) -> None:
        stored = (int(self._index.ntotal), int(self._index.d))
        if stored != (self.table.capacity, self.dimension):
            raise ArtifactError(
                f"{directory / _FILE}: holds {stored[0]} vectors of dimension {stored[1]}, the ids and config "
                f"say {self.table.capacity} of dimension {self.dimension}"
            )

    def _save_payload(self, directory: Path) -> None:
        _faiss().write_index(self._index, str(directory / _FILE))

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and self.index_type == "ivfpq" else 0
        self._index = faiss.read_index(str(directory / _FILE), flags)
        self._apply_parameters()

    def _apply_parameters(self) -> None:
        """Copy search-time parameters onto a loaded FAISS index."""


class HnswIndex(_FaissIndex):
    """FAISS ``IndexHNSWFlat``: ``M`` links per node, ``ef_construction`` when building, ``ef_search``
    when searching (higher: better recall, slower)."""

    index_type = "hnsw"

    def __init__(
        self,
        dimension: int,
        metric: str = "dot",
        *,
        M: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(dimension, metric, **kwargs)
        self.M = check_count("M", M, 2)
        self.ef_construction = check_count("ef_construction", ef_construction)
        self.ef_search = check_count("ef_search", ef_search)

    def config(self) -> dict[str, Any]:
        return super().config() | {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> HnswIndex:
        return cls(**config)

    def _build(self):
        index = _faiss().IndexHNSWFlat(self.dimension, self.M, self._faiss_metric)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def stored_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The rows of ``ids``, in that order: ``IndexHNSWFlat`` keeps every vector exactly beside its graph."""
        with self.lock.reading():
            positions = self.table.positions_of(ids, self.index_type)
            if not len(positions):
                return np.empty((0, self.dimension), dtype=np.float32)
            return np.asarray(self._index.reconstruct_batch(positions), dtype=np.float32)

    def _search_params(self, alive: np.ndarray | None):
        params = _faiss().SearchParametersHNSW()
        params.efSearch = self.ef_search
        return params

    def _apply_parameters(self) -> None:
        self._index.hnsw.efSearch = self.ef_search


class IvfPqIndex(_FaissIndex):
    """FAISS ``IndexIVFPQ``: ``nlist`` cells, ``m`` sub-quantisers of ``nbits`` bits (code size
    ``m * nbits / 8`` bytes per vector), ``nprobe`` cells visited per query. The first ``add`` trains
    the quantisers on the vectors it is given (or call :meth:`train` with a sample first)."""

    index_type = "ivfpq"

    def __init__(
        self,
        dimension: int,
        metric: str = "dot",
        *,
        nlist: int = 1024,
        m: int = 48,
        nbits: int = 8,
        nprobe: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(dimension, metric, **kwargs)
        nlist, m = check_count("nlist", nlist), check_count("m", m)
        nbits, nprobe = check_count("nbits", nbits, 1, 16), check_count("nprobe", nprobe)
        if dimension % m:
            raise ConfigError(f"m={m} sub-quantisers must divide the dimension {dimension}")
        self.nlist, self.m, self.nbits, self.nprobe = nlist, m, nbits, nprobe

    def config(self) -> dict[str, Any]:
        return super().config() | {"nlist": self.nlist, "m": self.m, "nbits": self.nbits, "nprobe": self.nprobe}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> IvfPqIndex:
        return cls(**config)

    def _build(self):
        faiss = _faiss()
        quantizer = faiss.IndexFlatL2(self.dimension) if self.metric == "l2" else faiss.IndexFlatIP(self.dimension)
        index = faiss.IndexIVFPQ(quantizer, self.dimension, self.nlist, self.m, self.nbits, self._faiss_metric)
        index.nprobe = self.nprobe
        return index

    def train(self, vectors: np.ndarray) -> None:
        """Train the coarse and product quantisers on a sample (at least ``max(nlist, 2**nbits)`` vectors)."""
        vectors = self._prepare(vectors, "training vectors")
        needed = max(self.nlist, 2**self.nbits)
        if len(vectors) < needed:
            raise ConfigError(
                f"IVF-PQ training needs at least {needed} vectors (nlist={self.nlist}, nbits={self.nbits}); "
                f"got {len(vectors)}. Lower nlist/nbits or use hnsw/flat"
            )
        if self._index is None:
            self._index = self._build()
        self._index.train(vectors)

    def _ensure(self, vectors: np.ndarray) -> None:
        if self._index is None or not self._index.is_trained:
            self.train(vectors)

    def _stored_parts(self) -> Iterator[np.ndarray]:
        faiss = _faiss()
        index = self._index
        yield index.quantizer.reconstruct_n(0, index.nlist)
        yield faiss.vector_to_array(index.pq.centroids)
        lists = index.invlists
        for number in range(index.nlist):
            size = lists.list_size(number)
            if size:
                yield faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
                yield faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()

    def _search_params(self, alive: np.ndarray | None):
        params = _faiss().SearchParametersIVF()
        params.nprobe = self.nprobe
        return params

    def _apply_parameters(self) -> None:
        self._index.nprobe = self.nprobe
