"""What encoders produce, as typed records: a float32 matrix (dense), ragged per-token vectors
(multi-vector), CSR weights over a vocabulary (sparse), or one score per text pair.

Multi-vector and sparse outputs are single arrays plus offsets, so they concatenate, slice and save
as ``.npy`` files without pickle or Python lists of arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from retrievekit.artifacts import Manifest, atomic_directory, fingerprint_json, read_manifest, write_manifest
from retrievekit.errors import ArtifactError

__all__ = ["OUTPUT_KINDS", "MultiVectors", "OutputKind", "SparseVectors"]

MULTIVECTORS_KIND = "multivectors"
SPARSE_VECTORS_KIND = "sparse_vectors"


def _save_arrays(directory: str | Path, kind: str, arrays: dict[str, np.ndarray], config: dict[str, int]) -> Path:
    """``.npy`` files (no pickle) and a manifest, written atomically."""
    with atomic_directory(directory) as staging:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)
        write_manifest(staging, Manifest(kind=kind, family=None, config=config, fingerprint=fingerprint_json(config)))
    return Path(directory)


def _load_arrays(
    directory: str | Path, kind: str, names: Sequence[str], mmap: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    manifest = read_manifest(directory, expected_kind=kind)
    arrays = {}
    for name in names:
        path = Path(directory) / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable ({exc})") from exc
    return arrays, manifest.config


OutputKind = Literal["dense", "multivector", "sparse", "score"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)


@dataclass(frozen=True)
class MultiVectors:
    """Per-text token vectors: row ``i`` is ``vectors[offsets[i]:offsets[i + 1]]`` ``(tokens_i, dim)``.

    >>> mv = MultiVectors.from_list([np.ones((2, 3)), np.zeros((1, 3))])
    >>> len(mv), mv.dimension, mv.lengths.tolist(), mv[1].tolist()
    (2, 3, [2, 1], [[0.0, 0.0, 0.0]])
    >>> MultiVectors.concatenate([mv, mv]).offsets.tolist()
    [0, 2, 3, 5, 6]
    """

    vectors: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.offsets.ndim != 1 or not len(self.offsets):
            raise ValueError("MultiVectors needs a (tokens, dim) array and 1-d offsets starting at 0")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.vectors) or (np.diff(self.offsets) < 0).any():
            raise ValueError("MultiVectors offsets must rise from 0 to the number of token vectors")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.vectors[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_list(cls, rows: Sequence[np.ndarray], dimension: int | None = None) -> MultiVectors:
        lengths = [len(r) for r in rows]
        dim = dimension if dimension is not None else (rows[0].shape[1] if rows else 0)
        vectors = (
            np.concatenate(list(rows)).astype(np.float32, copy=False)
            if sum(lengths)
            else np.empty((0, dim), np.float32)
        )
        return cls(vectors, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @classmethod
    def from_padded(cls, padded: np.ndarray, mask: np.ndarray) -> MultiVectors:
        """From ``(n, L, dim)`` vectors and their ``(n, L)`` mask (1 = keep)."""
        keep = mask.astype(bool)
        lengths = keep.sum(axis=1)
        vectors = np.ascontiguousarray(padded[keep], dtype=np.float32)
        return cls(vectors, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[MultiVectors]) -> MultiVectors:
        if not parts:
            raise ValueError("nothing to concatenate")
        shifts = np.cumsum([0] + [len(p.vectors) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)])
        return cls(np.concatenate([p.vectors for p in parts]), offsets.astype(np.int64))

    def take(self, rows: np.ndarray) -> MultiVectors:
        """The rows at ``rows``, in that order."""
        return MultiVectors.from_list([self[int(i)] for i in rows], self.dimension)

    def save(self, directory: str | Path) -> Path:
        """``vectors.npy`` + ``offsets.npy`` + manifest, atomically."""
        config = {"count": len(self), "tokens": len(self.vectors), "dimension": self.dimension}
        return _save_arrays(directory, MULTIVECTORS_KIND, {"vectors": self.vectors, "offsets": self.offsets}, config)

    @classmethod
    def write_stream(cls, directory: str | Path, chunks: Iterable[MultiVectors], dimension: int) -> MultiVectors:
        """Save chunks as one collection (the :meth:`save` layout) while they are produced, so a
        corpus of any size is written with one chunk in memory; return it, memory-mapped."""
        from retrievekit.models.npy_stream import NpyStreamWriter

        with atomic_directory(directory) as staging:
            lengths: list[np.ndarray] = []
            with NpyStreamWriter(staging / "vectors.npy", dimension) as writer:
                for chunk in chunks:
                    writer.append(np.asarray(chunk.vectors, dtype=np.float32).reshape(-1, dimension))
                    lengths.append(chunk.lengths)
            offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]) if lengths else np.zeros(1)
            np.save(staging / "offsets.npy", offsets.astype(np.int64), allow_pickle=False)
            config = {"count": len(offsets) - 1, "tokens": int(offsets[-1]), "dimension": dimension}
            digest = fingerprint_json(config)
            write_manifest(staging, Manifest(kind=MULTIVECTORS_KIND, family=None, config=config, fingerprint=digest))
        return cls.load(directory)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> MultiVectors:
        """Load what :meth:`save` wrote (vectors memory-mapped), checked against the manifest."""
        arrays, config = _load_arrays(directory, MULTIVECTORS_KIND, ("vectors", "offsets"), mmap)
        vectors, offsets = arrays["vectors"], np.asarray(arrays["offsets"])
        expected = (config.get("tokens"), config.get("dimension"))
        if vectors.shape != expected or len(offsets) != config.get("count", -2) + 1:
            raise ArtifactError(f"{directory}: the arrays do not match the manifest's counts")
        try:
            return cls(vectors, offsets)
        except ValueError as exc:
            raise ArtifactError(f"{directory}: {exc}") from exc


@dataclass(frozen=True)
class SparseVectors:
    """Rows of weights over a vocabulary in CSR form: row ``i`` has ``indices[indptr[i]:indptr[i+1]]``
    with ``values`` at the same positions; ``vocab_size`` columns.

    >>> sv = SparseVectors.from_dense(np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], dtype=np.float32))
    >>> sv.indptr.tolist(), sv.indices.tolist(), sv.values.tolist(), sv.vocab_size
    ([0, 1, 3], [1, 0, 2], [2.0, 1.0, 3.0], 3)
    >>> sv.row(1)[0].tolist(), sv.to_dense().tolist()
    ([0, 2], [[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or not len(self.indptr) or self.indptr[0] != 0:
            raise ValueError("SparseVectors indptr must be 1-d and start at 0")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.values):
            raise ValueError("SparseVectors indptr, indices and values disagree in length")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = self.indptr[index], self.indptr[index + 1]
        return self.indices[start:stop], self.values[start:stop]

    @property
    def nnz(self) -> np.ndarray:
        """Non-zeros per row."""
        return np.diff(self.indptr)

    @classmethod
    def empty(cls, vocab_size: int) -> SparseVectors:
        """No rows, over a vocabulary of ``vocab_size``."""
        return cls(np.zeros(1, np.int64), np.empty(0, np.int32), np.empty(0, np.float32), vocab_size)

    @classmethod
    def from_dense(cls, weights: np.ndarray, *, max_active_dims: int | None = None) -> SparseVectors:
        """Keep the non-zero weights of each row of ``(n, vocab)`` (the largest ``max_active_dims`` if set)."""
        weights = np.asarray(weights, dtype=np.float32)
        if max_active_dims is not None and max_active_dims < weights.shape[1]:
            cut = np.argpartition(-weights, max_active_dims - 1, axis=1)[:, max_active_dims:]
            weights = weights.copy()
            np.put_along_axis(weights, cut, 0.0, axis=1)
        rows, columns = np.nonzero(weights)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(weights)))]).astype(np.int64)
        return cls(indptr, columns.astype(np.int32), weights[rows, columns], int(weights.shape[1]))

    @classmethod
    def concatenate(cls, parts: Sequence[SparseVectors]) -> SparseVectors:
        if not parts:
            raise ValueError("nothing to concatenate")
        shifts = np.cumsum([0] + [len(p.indices) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + s for p, s in zip(parts, shifts, strict=True)])
        return cls(
            indptr.astype(np.int64),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            parts[0].vocab_size,
        )

    def pruned(self, max_active_dims: int) -> SparseVectors:
        """Each row's ``max_active_dims`` largest weights (by absolute value, as sentence-transformers'
        ``max_active_dims``), term ids still ascending within a row.

        >>> sv = SparseVectors.from_dense(np.array([[0.5, 2.0, 1.0], [0.0, 3.0, 0.0]], dtype=np.float32))
        >>> sv.pruned(2).to_dense().tolist()
        [[0.0, 2.0, 1.0], [0.0, 3.0, 0.0]]
        """
        rows = np.repeat(np.arange(len(self)), self.nnz)
        by_weight = np.lexsort((-np.abs(self.values), rows))  # per row, heaviest first
        rank = np.arange(len(rows)) - np.repeat(self.indptr[:-1], self.nnz)
        keep = np.sort(by_weight[rank < max_active_dims])  # back to row, then term order
        indptr = np.concatenate([[0], np.cumsum(np.minimum(self.nnz, max_active_dims))]).astype(np.int64)
        return SparseVectors(indptr, self.indices[keep], self.values[keep], self.vocab_size)

    def take(self, rows: np.ndarray) -> SparseVectors:
        pieces = [self.row(int(i)) for i in rows]
        lengths = [len(idx) for idx, _ in pieces]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate([idx for idx, _ in pieces]) if pieces else np.empty(0, np.int32)
        values = np.concatenate([val for _, val in pieces]) if pieces else np.empty(0, np.float32)
        return SparseVectors(indptr, indices.astype(np.int32), values.astype(np.float32), self.vocab_size)

    def save(self, directory: str | Path) -> Path:
        """``indptr.npy`` + ``indices.npy`` + ``values.npy`` + manifest, atomically."""
        config = {"count": len(self), "nnz": len(self.indices), "vocab_size": self.vocab_size}
        arrays = {"indptr": self.indptr, "indices": self.indices, "values": self.values}
        return _save_arrays(directory, SPARSE_VECTORS_KIND, arrays, config)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> SparseVectors:
        """Load what :meth:`save` wrote, checked against the manifest (counts, vocabulary range)."""
        arrays, config = _load_arrays(directory, SPARSE_VECTORS_KIND, ("indptr", "indices", "values"), mmap)
        indptr, indices = np.asarray(arrays["indptr"]), arrays["indices"]
        vocab_size = int(config.get("vocab_size", 0))
        if len(indptr) != config.get("count", -2) + 1 or len(indices) != config.get("nnz"):
            raise ArtifactError(f"{directory}: the arrays do not match the manifest's counts")
        if len(indices) and (int(np.min(indices)) < 0 or int(np.max(indices)) >= vocab_size):
            raise ArtifactError(f"{directory}: a term id lies outside the vocabulary of {vocab_size}")
        try:
            return cls(indptr, indices, arrays["values"], vocab_size)
        except ValueError as exc:
            raise ArtifactError(f"{directory}: {exc}") from exc

    def to_dense(self) -> np.ndarray:
        dense = np.zeros((len(self), self.vocab_size), dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), self.nnz)
        dense[rows, self.indices] = self.values
        return dense
