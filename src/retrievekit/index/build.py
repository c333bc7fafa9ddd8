"""Build an index from a corpus in one call: stream, encode (dense) or tokenize (BM25), add, save."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit.data.beir import collection_file
from retrievekit.data.readers import iter_documents
from retrievekit.errors import ConfigError
from retrievekit.index.base import Index
from retrievekit.index.registry import index_class
from retrievekit.index.vector import VectorIndex
from retrievekit.models.dense import DenseEncoder
from retrievekit.scoring import canonical_similarity

__all__ = ["build_index", "default_metric", "fill_index"]

logger = logging.getLogger(__name__)
_ADD_ROWS = 65536


def default_metric(encoder: DenseEncoder) -> str:
    """The model's similarity, with ``dot`` for normalised cosine models (the same ranking, cheaper)."""
    similarity = canonical_similarity(encoder.similarity_fn_name)
    if similarity == "cosine" and encoder.normalizes:
        return "dot"
    return similarity


def _model_reference(encoder: DenseEncoder) -> str:
    name = encoder.name
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def fill_index(index: VectorIndex, ids: list[str], vectors: np.ndarray, *, train_sample: int = 100_000) -> None:
    """Add (possibly memory-mapped) vectors in bounded chunks; an index that needs training (IVF-PQ)
    is first trained on a seeded random sample of at most ``train_sample`` of them."""
    if hasattr(index, "train"):
        sample = np.sort(np.random.default_rng(0).permutation(len(vectors))[:train_sample])
        index.train(np.asarray(vectors[sample]))
    for start in range(0, len(vectors), _ADD_ROWS):
        index.add(ids[start : start + _ADD_ROWS], np.asarray(vectors[start : start + _ADD_ROWS]))


def build_index(
    source: str | Path,
    index_type: str,
    *,
    encoder: DenseEncoder | None = None,
    output: str | Path | None = None,
    metric: str | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    params: dict[str, Any] | None = None,
) -> Index:
    """Index every document of ``source``; save to ``output`` when given. Titles are kept for display."""
    cls = index_class(index_type)
    path = collection_file(source, "documents")
    params = dict(params or {})
    titles: dict[str, str] = {}
    if index_type == "bm25":
        index = cls(**params)
        ids, texts = [], []
        for doc in iter_documents(path):
            ids.append(doc.id)
            texts.append(doc.full_text)
            if doc.title:
                titles[doc.id] = doc.title
        index.add(ids, texts)
    else:
        if encoder is None:
            raise ConfigError(f"a {index_type} index needs a model to encode the corpus")
        index = cls(
            encoder.dimension,
            metric or default_metric(encoder),
            model_fingerprint=encoder.fingerprint,
            model_name=_model_reference(encoder),
            model_options=encoder.load_options(),
            **params,
        )
        assert isinstance(index, VectorIndex)
        ids = []

        def texts():
            for doc in iter_documents(path):
                ids.append(doc.id)
                if doc.title:
                    titles[doc.id] = doc.title
                yield doc.full_text

        with tempfile.TemporaryDirectory(prefix="retrievekit-index-") as scratch:
            encoded = encoder.encode_to_npy(
                texts(),
                Path(scratch) / "vectors.npy",
                side="documents",
                batch_size=batch_size,
                show_progress=show_progress,
            )
            vectors = np.load(encoded.path, mmap_mode="r")
            fill_index(index, ids, vectors)
            del vectors
    index.titles = titles
    if output is not None:
        index.save(output)
        logger.info("saved a %s index of %d documents to %s", index_type, len(index), output)
    return index
