"""A retriever for a saved index folder, with the model the index remembers: the one place that
decides which model may run for an index (``retrievekit search``, ``retrievekit serve``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrievekit.errors import ConfigError
from retrievekit.index.base import Index
from retrievekit.retrieval.base import Retriever

__all__ = ["retriever_for_index"]


def retriever_for_index(
    index: Index,
    index_dir: str | Path,
    *,
    model: str | None = None,
    encoder: Any = None,
    backend: str = "torch",
    quantize: str | None = "int8",
    device: str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
) -> Retriever:
    """The retriever that searches ``index`` (loaded from ``index_dir``): BM25 needs no model; a
    dense, ColBERT or sparse index loads the model it recorded (the bundled MiniLM or a model saved
    inside the index folder) or ``model``. Recorded loading options are allow-listed (pooling,
    normalisation, lengths, prompts) and apply only to the recorded model: an index someone hands
    you cannot choose what runs. ``encoder``: an already loaded model the caller chose for it (the
    index still checks its fingerprint). ``quantize``: the onnx backend's weights (``"int8"`` or ``None``,
    float32) for dense and ColBERT models; SPLADE models have no onnx backend."""
    from retrievekit.index.bm25 import Bm25Index
    from retrievekit.index.multivector import MultiVectorIndex
    from retrievekit.index.sparse import SparseVectorIndex
    from retrievekit.index.vector import VectorIndex
    from retrievekit.retrieval.retriever import Bm25Retriever
    from retrievekit.trust import check_artifact_model_options, recorded_model

    if isinstance(index, Bm25Index):
        return Bm25Retriever(index)
    if not isinstance(index, VectorIndex | MultiVectorIndex | SparseVectorIndex):
        raise ConfigError(f"{index_dir}: searching a {index.index_type} index is not supported yet")
    if encoder is not None:
        return _retriever(index, encoder, force)
    recorded = index.model_name
    name = model or recorded_model(recorded, Path(index_dir))
    same = model is None or (isinstance(recorded, str) and _same_model(model, recorded))
    manifest = Path(index_dir) / "manifest.json"
    options = check_artifact_model_options(index.model_options, manifest, index.family) if same else {}
    loading: dict[str, Any] = {"backend": backend, "device": device, "trust_remote_code": trust_remote_code, **options}
    from retrievekit.models import load_colbert, load_encoder, load_sparse_encoder

    load: Callable[..., Any] = (
        load_colbert if isinstance(index, MultiVectorIndex) else
        load_sparse_encoder if isinstance(index, SparseVectorIndex) else load_encoder
    )  # fmt: skip
    if load is not load_sparse_encoder:
        loading["quantize"] = quantize
    return _retriever(index, load(name, **loading), force)


def _retriever(index: Index, encoder: Any, force: bool) -> Retriever:
    from retrievekit.index.multivector import MultiVectorIndex
    from retrievekit.index.sparse import SparseVectorIndex
    from retrievekit.index.vector import VectorIndex
    from retrievekit.retrieval.retriever import DenseRetriever, MultiVectorRetriever, SparseRetriever

    if isinstance(index, MultiVectorIndex):
        return MultiVectorRetriever(encoder, index, force=force)
    if isinstance(index, SparseVectorIndex):
        return SparseRetriever(encoder, index, force=force)
    if not isinstance(index, VectorIndex):
        raise ConfigError(f"a {index.index_type} index is not searched with a model")
    return DenseRetriever(encoder, index, force=force)


def _same_model(named: str, recorded: str) -> bool:
    if named == recorded:
        return True
    return Path(named).exists() and Path(recorded).exists() and Path(named).resolve() == Path(recorded).resolve()
