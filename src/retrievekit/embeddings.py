"""Saved embeddings: ``embeddings.npy`` + ``ids.json`` (input order) + ``manifest.json``.

The vectors are memory-mapped on load; int8 codes carry their calibration in ``calibration.npy``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.artifacts import (
    Manifest,
    atomic_directory,
    check_contained,
    directory_lock,
    fingerprint_files,
    read_manifest,
    write_manifest,
)
from retrievekit.data.beir import collection_file
from retrievekit.data.readers import count_records, iter_documents, iter_queries
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.dense import DenseEncoder
from retrievekit.quantization import PRECISIONS, SCALAR_PRECISIONS, Int8Calibration, quantize

__all__ = [
    "EMBEDDINGS_KIND",
    "EmbeddingSet",
    "encode_to_directory",
    "iter_encoded",
    "kind_of_family",
    "load_embeddings",
    "read_encoded",
]

logger = logging.getLogger(__name__)

EMBEDDINGS_KIND = "embeddings"
_CONVERT_ROWS = 65536


@dataclass(frozen=True)
class EmbeddingSet:
    """Loaded embeddings: ``vectors[i]`` belongs to ``ids[i]``."""

    ids: list[str]
    vectors: np.ndarray
    manifest: Manifest
    calibration: Int8Calibration | None = None


def _input_records(source: str | Path, side: str) -> tuple[Path, Iterator[tuple[str, str]]]:
    """Resolve a JSONL/TSV file or a BEIR folder/name to (file, iterator of (id, text to encode))."""
    path = collection_file(source, side)
    if side == "documents":
        return path, ((d.id, d.full_text) for d in iter_documents(path))
    return path, ((q.id, q.text) for q in iter_queries(path))


def _streamed_texts(source: str | Path, side: str, limit: int | None) -> tuple[Path, list[str], Iterator[str], int]:
    """The input file, the ids list (filled as the texts are read), the texts (at most ``limit``),
    and how many there will be."""
    path, records = _input_records(source, side)
    if limit is not None:
        import itertools

        records = itertools.islice(records, limit)
    ids: list[str] = []

    def texts() -> Iterator[str]:
        for record_id, text in records:
            ids.append(record_id)
            yield text

    total = min(count_records(path), limit) if limit is not None else count_records(path)
    return path, ids, texts(), total


def encode_to_directory(
    encoder: DenseEncoder,
    source: str | Path,
    output: str | Path,
    *,
    side: str = "documents",
    precision: str = "float32",
    batch_size: int = 32,
    max_length: int | None = None,
    truncate_dim: int | None = None,
    limit: int | None = None,
    show_progress: bool = True,
) -> EmbeddingSet:
    """Encode a JSONL/TSV file or a BEIR corpus (documents as ``title + " " + text``) into ``output``.

    The texts are streamed: memory holds the ids and one chunk of texts, never the whole corpus.
    """
    if side not in ("documents", "queries"):
        raise ConfigError(f"side must be 'documents' or 'queries', got {side!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path, ids, texts, total = _streamed_texts(source, side, limit)
    output = Path(output)
    with atomic_directory(output) as staging:
        raw = staging / "embeddings.npy"
        encoded = encoder.encode_to_npy(
            texts,
            raw,
            side=side,
            batch_size=batch_size,
            max_length=max_length,
            truncate_dim=truncate_dim,
            show_progress=show_progress,
            total=total,
        )
        calibration = _convert_precision(raw, precision, encoder.calibration if truncate_dim is None else None)
        if calibration is not None:
            calibration.save(staging / "calibration.npy")
        (staging / "ids.json").write_text(json.dumps(ids, ensure_ascii=False))
        config = {
            "model": encoder.name,
            "model_fingerprint": encoder.fingerprint,
            "side": side,
            "count": encoded.count,
            "dimension": encoded.dimension,
            "precision": precision,
            "similarity": encoder.similarity_fn_name,
            "normalized": encoder.normalizes,
            "backend": encoder.backend,
            "max_length": encoder.max_length if max_length is None else min(max_length, encoder.max_length),
            "truncate_dim": truncate_dim,
            "source": str(path),
            "limit": limit,
            "stats": {
                "texts": encoded.stats.texts,
                "tokens": encoded.stats.tokens,
                "empty": encoded.stats.empty,
                "truncated": encoded.stats.truncated,
            },
        }
        write_manifest(
            staging,
            Manifest(
                kind=EMBEDDINGS_KIND, family="dense", config=config, fingerprint=fingerprint_files([path], extra=config)
            ),
        )
    return load_embeddings(output)


def _convert_precision(path: Path, precision: str, stored: Int8Calibration | None) -> Int8Calibration | None:
    """Rewrite a float32 ``.npy`` in place at a lower precision, chunk by chunk. Scalar codes use the
    model's ``stored`` ranges, or ranges fitted on the whole file (saved beside the codes)."""
    if precision == "float32":
        return None
    source = np.load(path, mmap_mode="r")
    calibration = stored if precision in SCALAR_PRECISIONS else None
    if precision in SCALAR_PRECISIONS and calibration is None:
        lower = np.full(source.shape[1], np.inf, dtype=np.float32)
        upper = np.full(source.shape[1], -np.inf, dtype=np.float32)
        for start in range(0, len(source), _CONVERT_ROWS):
            block = np.asarray(source[start : start + _CONVERT_ROWS])
            lower, upper = np.minimum(lower, block.min(axis=0)), np.maximum(upper, block.max(axis=0))
        calibration = Int8Calibration(lower, upper)
    sample = quantize(np.asarray(source[:1]), precision, calibration)
    converted = path.with_name("converted.npy")
    target = np.lib.format.open_memmap(converted, mode="w+", dtype=sample.dtype, shape=(len(source), sample.shape[1]))
    for start in range(0, len(source), _CONVERT_ROWS):
        target[start : start + _CONVERT_ROWS] = quantize(
            np.asarray(source[start : start + _CONVERT_ROWS]), precision, calibration
        )
    target.flush()
    del target, source
    converted.replace(path)
    return calibration


def load_embeddings(directory: str | Path, *, mmap: bool = True) -> EmbeddingSet:
    """Load saved embeddings (memory-mapped by default)."""
    directory = Path(directory)
    with directory_lock(directory, exclusive=False):
        return _load_embeddings(directory, mmap)


def _load_embeddings(directory: Path, mmap: bool) -> EmbeddingSet:
    manifest = read_manifest(directory, expected_kind=EMBEDDINGS_KIND)
    check_contained(directory)
    if "shards" in manifest.config:  # written by encode_with_ray: the shards, one after another
        parts = list(iter_encoded(directory))
        ids = [i for shard_ids, _ in parts for i in shard_ids]
        return EmbeddingSet(ids, np.concatenate([vectors for _, vectors in parts]), manifest)
    try:
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        vectors = np.load(directory / "embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory}: incomplete embeddings ({exc})") from exc
    if len(ids) != len(vectors):
        raise ArtifactError(f"{directory}: {len(ids)} ids but {len(vectors)} vectors")
    calibration_path = directory / "calibration.npy"
    calibration = Int8Calibration.load(calibration_path) if calibration_path.is_file() else None
    return EmbeddingSet(ids, vectors, manifest, calibration)


MULTIVECTOR_EMBEDDINGS_KIND = "multivector_embeddings"
SPARSE_EMBEDDINGS_KIND = "sparse_embeddings"


def encode_rows_to_directory(
    encoder: Any,
    source: str | Path,
    output: str | Path,
    *,
    side: str = "documents",
    batch_size: int = 32,
    limit: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Encode texts with a ColBERT or SPLADE model into ``output``: ``vectors/`` (ColBERT: token
    vectors and per-text offsets, :meth:`~retrievekit.outputs.MultiVectors.load` reads them, streamed
    to disk chunk by chunk; SPLADE: CSR rows, :meth:`~retrievekit.outputs.SparseVectors.load`),
    ``ids.json`` and a manifest. Returns the manifest's config."""
    from retrievekit.models.encoding import EncodeStats
    from retrievekit.outputs import MultiVectors, SparseVectors

    family = getattr(encoder, "family", "dense")
    if family not in ("multivector", "sparse"):
        raise ConfigError(f"encode_rows_to_directory is for ColBERT and SPLADE models, not {family} ones")
    if side not in ("documents", "queries"):
        raise ConfigError(f"side must be 'documents' or 'queries', got {side!r}")
    path, ids, texts, total = _streamed_texts(source, side, limit)
    stats = EncodeStats()
    with atomic_directory(output) as staging:
        chunks = encoder.encode_chunks(
            texts, side, batch_size=batch_size, show_progress=show_progress, total=total, stats=stats
        )
        sizes: dict[str, int]
        if family == "multivector":
            vectors: Any = MultiVectors.write_stream(staging / "vectors", chunks, encoder.dimension)
            sizes = {"token_vectors": len(vectors.vectors)}
        else:
            parts = list(chunks)
            vectors = SparseVectors.concatenate(parts) if parts else SparseVectors.empty(encoder.dimension)
            vectors.save(staging / "vectors")
            sizes = {"nonzeros": len(vectors.indices)}
        (staging / "ids.json").write_text(json.dumps(ids, ensure_ascii=False))
        config = {
            "model": encoder.name,
            "model_fingerprint": encoder.fingerprint,
            "side": side,
            "count": len(vectors),
            **sizes,
            "dimension": encoder.dimension,
            "backend": encoder.backend,
            "source": str(path),
            "limit": limit,
            "stats": {"texts": stats.texts, "tokens": stats.tokens, "empty": stats.empty, "truncated": stats.truncated},
        }
        kind = MULTIVECTOR_EMBEDDINGS_KIND if family == "multivector" else SPARSE_EMBEDDINGS_KIND
        manifest = Manifest(
            kind=kind, family=family, config=config, fingerprint=fingerprint_files([path], extra=config)
        )  # fmt: skip
        write_manifest(staging, manifest)
    return config


_KINDS = {"dense": EMBEDDINGS_KIND, "multivector": MULTIVECTOR_EMBEDDINGS_KIND, "sparse": SPARSE_EMBEDDINGS_KIND}


def kind_of_family(family: str) -> str:
    """The manifest kind of a family's encoded folder."""
    if family not in _KINDS:
        raise ConfigError(f"no encoded-folder layout for {family} models")
    return _KINDS[family]


def _read_part(folder: Path, family: str, mmap: bool) -> tuple[list[str], Any]:
    """One folder's ids and rows: ``embeddings.npy`` (dense) or ``vectors/`` (ColBERT, sparse)."""
    from retrievekit.outputs import MultiVectors, SparseVectors

    try:
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        if family == "dense":
            rows: Any = np.load(folder / "embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            rows = (MultiVectors if family == "multivector" else SparseVectors).load(folder / "vectors", mmap=mmap)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder}: incomplete encoded rows ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ArtifactError(f"{folder / 'ids.json'}: expected a list of non-empty string ids")
    if len(ids) != len(rows):
        raise ArtifactError(f"{folder}: {len(ids)} ids but {len(rows)} encoded rows")
    return ids, rows


def iter_encoded(directory: str | Path, *, mmap: bool = True) -> Iterator[tuple[list[str], Any]]:
    """``(ids, rows)`` of an encoded folder of any family, one shard at a time: a local ``encode``
    folder is one part; a folder written on Ray (``--engine ray``) yields its shards in corpus
    order, so an index can be filled from a corpus larger than memory. ``rows`` is a float32
    array (dense), :class:`~retrievekit.outputs.MultiVectors` or :class:`~retrievekit.outputs.SparseVectors`."""
    directory = Path(directory)
    manifest = read_manifest(directory, expected_kind=tuple(_KINDS.values()))
    check_contained(directory)
    family = manifest.family or "dense"
    shards = manifest.config.get("shards")
    if shards is None:
        yield _read_part(directory, family, mmap)
        return
    if not isinstance(shards, list):
        raise ArtifactError(f"{directory / 'manifest.json'}: shards must be a list")
    seen = 0
    for shard in shards:
        name = shard.get("name") if isinstance(shard, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"shard-\d{1,9}", name):  # data: never a path out
            raise ArtifactError(f"{directory / 'manifest.json'}: a shard name must be shard-NNNNN, got {name!r}")
        ids, rows = _read_part(directory / name, family, mmap)
        if len(ids) != shard.get("count"):
            raise ArtifactError(f"{directory / name}: {len(ids)} rows, the manifest says {shard.get('count')}")
        seen += len(ids)
        yield ids, rows
    if seen != manifest.config.get("count"):
        raise ArtifactError(
            f"{directory}: the shards hold {seen} rows, the manifest says {manifest.config.get('count')}"
        )


def read_encoded(directory: str | Path) -> tuple[list[str], Any, Manifest]:
    """Every row of an encoded folder (local or sharded) in one piece, with its manifest."""
    from retrievekit.outputs import MultiVectors, SparseVectors

    directory = Path(directory)
    manifest = read_manifest(directory, expected_kind=tuple(_KINDS.values()))
    parts = list(iter_encoded(directory))
    ids = [i for shard_ids, _ in parts for i in shard_ids]
    rows = [r for _, r in parts]
    if len(rows) == 1:
        return ids, rows[0], manifest
    if isinstance(rows[0], MultiVectors):
        return ids, MultiVectors.concatenate(rows), manifest
    if isinstance(rows[0], SparseVectors):
        return ids, SparseVectors.concatenate(rows), manifest
    return ids, np.concatenate(rows), manifest
