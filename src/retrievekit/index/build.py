"""Build an index from a corpus in one call: stream, encode (dense) or tokenize (BM25), add, save."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrievekit.artifacts import scratch_directory
from retrievekit.data.beir import collection_file
from retrievekit.data.readers import count_records, iter_documents
from retrievekit.errors import ConfigError
from retrievekit.index.base import Index
from retrievekit.index.registry import index_class, index_type_info, index_types
from retrievekit.index.vector import VectorIndex
from retrievekit.scoring import canonical_similarity

__all__ = ["build_index", "default_metric", "fill_index", "index_from_encoded", "vector_index"]

if TYPE_CHECKING:
    from retrievekit.models.dense import DenseEncoder

logger = logging.getLogger(__name__)
_ADD_ROWS = 65536


def default_metric(encoder: DenseEncoder) -> str:
    """The model's similarity, with ``dot`` for normalised cosine models (the same ranking, cheaper)."""
    similarity = canonical_similarity(encoder.similarity_fn_name)
    if similarity == "cosine" and encoder.normalizes:
        return "dot"
    return similarity


def _model_reference(encoder: Any) -> str:
    name = encoder.name
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def fill_index(index: VectorIndex, ids: list[str], vectors: np.ndarray, *, train_sample: int = 100_000) -> None:
    """Add (possibly memory-mapped) vectors in bounded chunks; an index that needs training (IVF-PQ)
    is first trained on a seeded random sample of at most ``train_sample`` of them."""
    if hasattr(index, "train"):
        sample = np.sort(np.random.default_rng(0).permutation(len(vectors))[:train_sample])
        index.train(np.asarray(vectors[sample]))
    index.reserve(len(vectors))
    for start in range(0, len(vectors), _ADD_ROWS):
        index.add(ids[start : start + _ADD_ROWS], np.asarray(vectors[start : start + _ADD_ROWS]))


def check_dense(encoder: Any, index_type: str) -> None:
    """Refuse a model of another family for a dense index type, naming the types that fit it."""
    family = getattr(encoder, "family", "dense")
    if family != "dense":
        fits = ", ".join(sorted(index_types(family))) or "none yet"
        raise ConfigError(
            f"a {index_type} index stores one vector per document; {encoder.name} is a {family} model "
            f"(its index types: {fits})"
        )


def vector_index(
    index_type: str, dimension: int, metric: str, *, model_fingerprint: str | None = None, **options: Any
) -> VectorIndex:
    """A new empty vector index of a registered dense type."""
    cls = index_class(index_type)
    if not issubclass(cls, VectorIndex):
        raise ConfigError(f"index type {index_type!r} does not store vectors; choose one of {index_types('dense')}")
    return cls(dimension, metric, model_fingerprint=model_fingerprint, **options)


def _document_texts(path: Path, ids: list[str], titles: dict[str, str]) -> Iterator[str]:
    """The encodable text of each document of ``path``, streamed; its id goes to ``ids`` and its
    title (when it has one) to ``titles`` on the way."""
    for doc in iter_documents(path):
        ids.append(doc.id)
        if doc.title:
            titles[doc.id] = doc.title
        yield doc.full_text


def _build_lexical(path: Path, index_type: str, params: dict[str, Any], titles: dict[str, str], **_: Any) -> Index:
    index = index_class(index_type)(**params)
    ids, texts = [], []
    for doc in iter_documents(path):
        ids.append(doc.id)
        texts.append(doc.full_text)
        if doc.title:
            titles[doc.id] = doc.title
    index.add(ids, texts)
    return index


def _build_dense(
    path: Path,
    index_type: str,
    params: dict[str, Any],
    titles: dict[str, str],
    *,
    encoder: DenseEncoder | None,
    metric: str | None,
    batch_size: int,
    show_progress: bool,
) -> Index:
    if encoder is None:
        raise ConfigError(f"a {index_type} index needs a model to encode the corpus")
    check_dense(encoder, index_type)
    index = vector_index(
        index_type,
        encoder.dimension,
        metric or default_metric(encoder),
        model_fingerprint=encoder.fingerprint,
        model_name=_model_reference(encoder),
        model_options=encoder.load_options(),
        **params,
    )
    ids: list[str] = []
    with scratch_directory("index") as scratch:
        encoded = encoder.encode_to_npy(
            _document_texts(path, ids, titles), scratch / "vectors.npy", side="documents", batch_size=batch_size,
            show_progress=show_progress, total=count_records(path),
        )  # fmt: skip
        vectors = np.load(encoded.path, mmap_mode="r")
        fill_index(index, ids, vectors)
        del vectors
    return index


def _model_index(index_type: str, params: dict[str, Any], encoder: Any, family: str, model: str) -> Any:
    """A new empty ``index_type`` index (of ``family``) for ``encoder``'s vectors, which must be a
    ``model`` (a model of that family)."""
    if encoder is None or getattr(encoder, "family", None) != family:
        raise ConfigError(f"a {index_type} index needs a {model} model to encode the corpus")
    cls: Any = index_class(index_type)
    index = cls(
        encoder.dimension, model_fingerprint=encoder.fingerprint, model_name=_model_reference(encoder),
        model_options=encoder.load_options(), **params,
    )  # fmt: skip
    if index.family != family:
        raise ConfigError(f"{index_type} is not a {family} index")
    return index


def _document_chunks(
    encoder: Any, path: Path, ids: list[str], titles: dict[str, str], batch_size: int, show_progress: bool
) -> Iterator[Any]:
    """A per-text family's encoded chunks of the documents of ``path`` (ids and titles collected on the way)."""
    return encoder.encode_chunks(
        _document_texts(path, ids, titles), "documents", batch_size=batch_size, show_progress=show_progress,
        total=count_records(path),
    )  # fmt: skip


def _build_multivector(
    path: Path,
    index_type: str,
    params: dict[str, Any],
    titles: dict[str, str],
    *,
    encoder: Any,
    batch_size: int,
    show_progress: bool,
    **_: Any,
) -> Index:
    """Token vectors are streamed to a scratch file as they are encoded, then indexed from there
    (memory-mapped), so the corpus's vectors are never all in memory at once."""
    from retrievekit.outputs import MultiVectors

    index = _model_index(index_type, params, encoder, "multivector", "ColBERT")
    ids: list[str] = []
    with scratch_directory("index") as scratch:
        chunks = _document_chunks(encoder, path, ids, titles, batch_size, show_progress)
        vectors = MultiVectors.write_stream(scratch / "vectors", chunks, encoder.dimension)
        index.add(ids, vectors)
        del vectors
    return index


def _build_sparse(
    path: Path,
    index_type: str,
    params: dict[str, Any],
    titles: dict[str, str],
    *,
    encoder: Any,
    batch_size: int,
    show_progress: bool,
    **_: Any,
) -> Index:
    """Each encoded chunk of sparse vectors goes into the index as it comes (a few hundred weights
    per document: the index itself is what grows)."""
    index = _model_index(index_type, params, encoder, "sparse", "sparse (SPLADE)")
    ids: list[str] = []
    added = 0
    for chunk in _document_chunks(encoder, path, ids, titles, batch_size, show_progress):
        index.add(ids[added : added + len(chunk)], chunk)
        added += len(chunk)
    return index


# how each index family is filled from a corpus file; a new family adds its builder here
_BUILDERS: dict[str, Callable[..., Index]] = {
    "lexical": _build_lexical,
    "dense": _build_dense,
    "multivector": _build_multivector,
    "sparse": _build_sparse,
}


def build_index(
    source: str | Path,
    index_type: str,
    *,
    encoder: Any = None,
    output: str | Path | None = None,
    metric: str | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    params: dict[str, Any] | None = None,
    embeddings: str | Path | None = None,
    ray: Any = None,
) -> Index:
    """Index every document of ``source``; save to ``output`` when given. Titles are kept for display.

    The documents are encoded here, or read from ``embeddings`` (an encoded folder of the model's
    family: local, or sharded by ``encode --engine ray``), or encoded on Ray Data first when ``ray``
    (:class:`~retrievekit.scale.RaySettings`) is given."""
    family = index_type_info(index_type).family
    if family not in _BUILDERS:
        raise ConfigError(f"building a {family} index ({index_type}) from a corpus is not supported yet")
    path = collection_file(source, "documents")
    titles: dict[str, str] = {}
    if family != "lexical" and (embeddings is not None or ray is not None):
        if embeddings is not None and ray is not None:
            raise ConfigError("give encoded rows (embeddings) or a Ray engine to encode them, not both")
        if embeddings is not None:
            index = index_from_encoded(embeddings, index_type, encoder, metric=metric, params=params)
        else:
            from retrievekit.scale import encode_with_ray

            with scratch_directory("ray-index") as scratch:
                encode_with_ray(encoder, path, scratch / "encoded", settings=ray, batch_size=batch_size,
                                show_progress=show_progress)  # fmt: skip
                index = index_from_encoded(scratch / "encoded", index_type, encoder, metric=metric, params=params)
        titles = {d.id: d.title for d in iter_documents(path) if d.title}
    else:
        index = _BUILDERS[family](
            path, index_type, dict(params or {}), titles, encoder=encoder, metric=metric, batch_size=batch_size,
            show_progress=show_progress,
        )  # fmt: skip
    index.titles = titles
    if output is not None:
        index.save(output)
        logger.info("saved a %s index of %d documents to %s", index_type, len(index), output)
    return index


def index_from_encoded(
    directory: str | Path,
    index_type: str,
    encoder: Any,
    *,
    metric: str | None = None,
    params: dict[str, Any] | None = None,
) -> Index:
    """A new ``index_type`` index filled from an encoded folder (local, or the shards of ``encode
    --engine ray``), which must hold ``encoder``'s output (checked by fingerprint): shard by shard
    where the index takes items in pieces, all at once where it trains on them (IVF-PQ, PLAID)."""
    from retrievekit.artifacts import read_manifest
    from retrievekit.embeddings import iter_encoded, read_encoded

    family = index_type_info(index_type).family
    manifest = read_manifest(directory)
    if manifest.family != family:
        raise ConfigError(f"{directory} holds {manifest.family} rows; a {index_type} index stores {family} ones")
    recorded = manifest.config.get("model_fingerprint")
    if encoder is None or recorded != encoder.fingerprint:
        raise ConfigError(
            f"{directory} was encoded with model {manifest.config.get('model')!r} ({str(recorded)[:20]}...), not "
            f"{getattr(encoder, 'name', None)!r}: give the model that encoded it"
        )
    params = dict(params or {})
    index: Any
    if family == "dense":
        check_dense(encoder, index_type)
        index = vector_index(
            index_type, encoder.dimension, metric or default_metric(encoder), model_fingerprint=encoder.fingerprint,
            model_name=_model_reference(encoder), model_options=encoder.load_options(), **params,
        )  # fmt: skip
    else:
        index = _model_index(index_type, params, encoder, family, "ColBERT" if family == "multivector" else "sparse")
    if hasattr(index, "train") or family == "multivector":
        ids, rows, _ = read_encoded(directory)
        if family == "dense":
            fill_index(index, ids, rows)
        else:
            index.add(ids, rows)
        return index
    for ids, rows in iter_encoded(directory):
        if family == "dense":
            fill_index(index, ids, rows)
        else:
            index.add(ids, rows)
    return index
