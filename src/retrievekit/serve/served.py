"""What a server serves: embedding models, rerankers and indexes, each behind its own
:class:`~retrievekit.serve.batcher.ModelWorker`, with how it counts tokens and runs a merged batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.serve.batcher import BatchRecord, ModelWorker
from retrievekit.serve.settings import ServeSettings

__all__ = ["ServedEmbedder", "ServedEncoder", "ServedIndex", "ServedModels", "ServedReranker", "limit_threads"]

SIDES = {"query": "queries", "document": "documents"}


def limit_threads(model: Any, threads: int) -> None:
    """Run ``model`` on ``threads`` CPU threads: torch's intra-op pool (process-wide) and the ONNX
    runners' worker threads."""
    import torch

    torch.set_num_threads(threads)
    runners = getattr(model, "_runners", {})
    for runner in (r for group in (runners.values() if isinstance(runners, dict) else [runners]) for r in group):
        if hasattr(runner, "workers"):
            runner.workers = threads


def _encode(model: Any, side: str, texts: list[str]) -> Any:
    """One side of any encoder family: documents or queries."""
    return model.encode_documents(texts) if side == "documents" else model.encode_queries(texts)


def _worker(name: str, run: Callable[[str, list[Any]], Sequence[Any]], settings: ServeSettings,
            lock: threading.Lock, on_batch: Callable[[BatchRecord], None] | None) -> ModelWorker:  # fmt: skip
    return ModelWorker(
        name, run, max_batch_tokens=settings.max_batch_tokens, batch_wait=settings.batch_wait_ms / 1000,
        max_queue=settings.max_queue, compute_lock=lock, on_batch=on_batch,
    )  # fmt: skip


@dataclass
class ServedEmbedder:
    """A dense encoder behind ``/v1/embeddings``: batches of queries or of documents."""

    name: str
    encoder: Any
    worker: ModelWorker

    @classmethod
    def start(cls, name: str, encoder: Any, settings: ServeSettings, lock: threading.Lock,
              on_batch: Callable[[BatchRecord], None] | None = None) -> ServedEmbedder:  # fmt: skip
        from retrievekit.models.dense import DenseEncoder

        if not isinstance(encoder, DenseEncoder):
            family = getattr(encoder, "family", type(encoder).__name__)
            raise ConfigError(
                f"model {name!r} is a {family} model: /v1/embeddings serves one vector per text (dense models); "
                "serve its index with --index to search it"
            )

        def run(side: str, texts: list[str]) -> list[np.ndarray]:
            return list(_encode(encoder, side, texts))

        return cls(name, encoder, _worker(name, run, settings, lock, on_batch))

    @property
    def dimension(self) -> int:
        return int(self.encoder.dimension)

    @property
    def max_length(self) -> int:
        return int(self.encoder.max_length)

    def count(self, texts: list[str], side: str) -> tuple[list[int], list[bool]]:
        return self.encoder.token_counts(texts, side)

    def describe(self) -> dict[str, Any]:
        e = self.encoder
        return {"type": "embeddings", "dimension": self.dimension, "normalized": bool(e.normalizes),
                "max_length": int(e.max_length), "backend": str(e.backend)}  # fmt: skip


@dataclass
class ServedEncoder:
    """A ColBERT (multi-vector) or learned sparse model behind ``/v1/encode``: per text, its token
    vectors or its (indices, values)."""

    name: str
    model: Any
    worker: ModelWorker

    @classmethod
    def start(cls, name: str, model: Any, settings: ServeSettings, lock: threading.Lock,
              on_batch: Callable[[BatchRecord], None] | None = None) -> ServedEncoder:  # fmt: skip
        from retrievekit.outputs import MultiVectors, SparseVectors

        family = getattr(model, "family", type(model).__name__)
        if family not in ("multivector", "sparse"):
            raise ConfigError(
                f"model {name!r} is a {family} model: the server serves dense, multi-vector and sparse models"
            )

        def run(side: str, texts: list[str]) -> list[Any]:
            output = _encode(model, side, texts)
            if isinstance(output, MultiVectors):
                return [np.asarray(output[i]) for i in range(len(output))]
            if isinstance(output, SparseVectors):
                return [output.row(i) for i in range(len(output))]
            raise ConfigError(f"model {name!r} returned {type(output).__name__}")

        return cls(name, model, _worker(name, run, settings, lock, on_batch))

    @property
    def family(self) -> str:
        return str(self.model.family)

    @property
    def max_length(self) -> int:
        return int(self.model.max_length)

    def count(self, texts: list[str], side: str) -> tuple[list[int], list[bool]]:
        from retrievekit.models.encoding import token_counts

        return token_counts(self.model.tower.tokenizer, texts, self.max_length)

    def describe(self) -> dict[str, Any]:
        return {"type": "encode", "family": self.family, "max_length": self.max_length}


@dataclass
class ServedReranker:
    """A cross-encoder or LLM reranker behind ``/v1/rerank`` and ``/rerank``: batches of pairs, raw logits."""

    name: str
    model: Any
    worker: ModelWorker
    activation: str

    @classmethod
    def start(cls, name: str, model: Any, settings: ServeSettings, lock: threading.Lock,
              on_batch: Callable[[BatchRecord], None] | None = None) -> ServedReranker:  # fmt: skip
        if model.num_labels != 1:
            raise ConfigError(f"reranker {name!r} gives {model.num_labels} scores per pair; serving needs one")

        def run(_: str, pairs: list[tuple[str, str]]) -> list[float]:
            return np.asarray(model.logits(pairs), dtype=np.float32).tolist()

        config = getattr(model, "config", None)
        activation = getattr(config, "activation", None) or "sigmoid"  # LLM rerankers: FlagEmbedding's normalize
        if activation == "identity":
            activation = "sigmoid"
        return cls(name, model, _worker(name, run, settings, lock, on_batch), activation)

    def count(self, query: str, documents: list[str]) -> list[int]:
        """Tokens per pair (query + document + special tokens, at most the model's limit)."""
        from retrievekit.models.encoding import token_counts

        tokenizer, limit = self.model.tower.tokenizer, int(getattr(self.model, "max_length", 512) or 512)
        query_tokens = token_counts(tokenizer, [query], limit)[0][0]
        return [min(limit, query_tokens + n) for n in token_counts(tokenizer, documents, limit)[0]]

    def activate(self, logits: np.ndarray) -> np.ndarray:
        from retrievekit.models.cross_encoder import activate

        return activate(logits, self.activation)

    def describe(self) -> dict[str, Any]:
        return {"type": "rerank", "activation": self.activation, "backend": str(getattr(self.model, "runtime", ""))}


@dataclass
class ServedIndex:
    """A saved index of any family behind ``/v1/search``: batches of queries searched together."""

    name: str
    index: Any
    retriever: Any
    worker: ModelWorker
    documents: Mapping[str, str] | None = None  # document texts for reranking search results

    @classmethod
    def start(cls, name: str, index: Any, retriever: Any, settings: ServeSettings, lock: threading.Lock,
              on_batch: Callable[[BatchRecord], None] | None = None,
              documents: Mapping[str, str] | None = None) -> ServedIndex:  # fmt: skip
        def run(_: str, items: list[tuple[str, int]]) -> list[Hits]:
            depth = max(k for _, k in items)
            hits = retriever.search([q for q, _ in items], depth)
            return [Hits(h.ids[:k], h.scores[:k]) for h, (_, k) in zip(hits, items, strict=True)]

        return cls(name, index, retriever, _worker(name, run, settings, lock, on_batch), documents)

    def describe(self) -> dict[str, Any]:
        return {"type": "index", "index_type": self.index.index_type, "documents": len(self.index),
                "rerankable": self.documents is not None}  # fmt: skip


@dataclass
class ServedModels:
    """Everything one server holds, by name."""

    embedders: dict[str, ServedEmbedder] = field(default_factory=dict)
    rerankers: dict[str, ServedReranker] = field(default_factory=dict)
    indexes: dict[str, ServedIndex] = field(default_factory=dict)
    encoders: dict[str, ServedEncoder] = field(default_factory=dict)  # multi-vector and sparse models

    def workers(self) -> list[ModelWorker]:
        served: list[Any] = [*self.embedders.values(), *self.encoders.values(), *self.rerankers.values(),
                             *self.indexes.values()]  # fmt: skip
        return [s.worker for s in served]

    def stop(self) -> None:
        for worker in self.workers():
            worker.stop()
