"""Load what ``retrievekit serve`` serves from its ``NAME=PATH`` arguments."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrievekit.errors import ConfigError
from retrievekit.serve.metrics import ServeMetrics
from retrievekit.serve.served import (
    ServedEmbedder,
    ServedEncoder,
    ServedIndex,
    ServedModels,
    ServedReranker,
    limit_threads,
)
from retrievekit.serve.settings import ServeSettings

__all__ = ["load_served", "named"]

logger = logging.getLogger(__name__)


def named(values: Sequence[str], what: str) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after its folder; ``minilm`` stays ``minilm``) -> {name: path}.

    >>> named(["minilm", "fast=runs/model"], "--model")
    {'minilm': 'minilm', 'fast': 'runs/model'}
    """
    table: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value.rstrip("/")).name or value, value
        if not name or not path:
            raise ConfigError(f"{what} {value!r}: expected NAME=PATH or PATH")
        if name in table:
            raise ConfigError(f"{what}: the name {name!r} is given twice; name them with NAME=PATH")
        table[name] = path
    return table


def load_served(
    *,
    models: Sequence[str] = (),
    rerankers: Sequence[str] = (),
    indexes: Sequence[str] = (),
    corpora: Sequence[str] = (),
    settings: ServeSettings,
    metrics: ServeMetrics,
    backend: str = "torch",
    quantize: str | None = "int8",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> ServedModels:
    """Load every model, reranker and index and start a worker for each. ``quantize``: the onnx
    backend's weights (``"int8"`` or ``None``, float32) for the families that have one."""
    from retrievekit.index import load_index
    from retrievekit.models import load_model
    from retrievekit.models.cross_encoder import load_reranker
    from retrievekit.retrieval.from_index import retriever_for_index

    if not (models or rerankers or indexes):
        raise ConfigError("nothing to serve: give --model, --reranker or --index")
    lock = threading.Lock()
    served = ServedModels()
    loading: dict[str, Any] = {
        "backend": backend, "quantize": quantize, "device": device, "trust_remote_code": trust_remote_code,
    }  # fmt: skip
    texts = {name: _corpus_texts(path) for name, path in named(corpora, "--corpus").items()}
    index_paths = named(indexes, "--index")
    unknown = sorted(set(texts) - set(index_paths))
    if unknown:
        raise ConfigError(f"--corpus {unknown[0]}=...: no index of that name (indexes: {', '.join(index_paths)})")
    loaded: list[Any] = []
    by_path: dict[str, Any] = {}  # the models the caller named, which an index may use
    for name, path in named(models, "--model").items():
        model = load_model(path, **loading)
        by_path[_key(path)] = model
        loaded.append(model)
        if _is_dense(model):
            served.embedders[name] = ServedEmbedder.start(name, model, settings, lock, metrics.observe_batch)
        else:  # ColBERT or sparse: /v1/encode, and the index built with it
            served.encoders[name] = ServedEncoder.start(name, model, settings, lock, metrics.observe_batch)
    for name, path in named(rerankers, "--reranker").items():
        model = load_reranker(path, **loading)
        served.rerankers[name] = ServedReranker.start(name, model, settings, lock, metrics.observe_batch)
        loaded.append(model)
    for name, path in index_paths.items():
        index = load_index(path)
        recorded = getattr(index, "model_name", None)
        chosen = by_path.get(_key(recorded)) if isinstance(recorded, str) else None
        retriever = retriever_for_index(index, path, encoder=chosen, **loading)
        served.indexes[name] = ServedIndex.start(name, index, retriever, settings, lock, metrics.observe_batch,
                                                 documents=texts.get(name))  # fmt: skip
        loaded.append(getattr(retriever, "encoder", None))
    if settings.threads is not None:
        for model in loaded:
            if model is not None:
                limit_threads(model, settings.threads)
    return served


def _key(reference: str) -> str:
    """A model reference as a comparable key: a path resolved, a name as given."""
    return str(Path(reference).resolve()) if Path(reference).exists() else reference


def _is_dense(model: Any) -> bool:
    from retrievekit.models.dense import DenseEncoder

    return isinstance(model, DenseEncoder)


def _corpus_texts(path: str) -> dict[str, str]:
    """Document id -> the text a reranker reads (title and body, as indexes are built); a BEIR
    folder's corpus.jsonl or a corpus file."""
    from retrievekit.data.readers import iter_documents

    source = Path(path) / "corpus.jsonl" if Path(path).is_dir() else Path(path)
    return {doc.id: doc.full_text for doc in iter_documents(source)}
