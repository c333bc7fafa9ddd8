"""What an evaluation runs: retriever specs, built against the evaluated corpus, and their registry.

A :class:`RetrieverSpec` says how to build a :class:`~retrievekit.retrieval.Retriever` for a corpus
and gives a fingerprint of everything that shapes its results *before* it is built, so a cached run
is found without encoding or indexing anything. :class:`EvaluationCorpus` is what specs build from:
the corpus, its hash, and corpus embeddings cached per model fingerprint and runtime (for every
family that encodes documents). The CLI turns ``--retriever NAME`` into specs through
:func:`make_spec`; a new family registers its spec with :func:`register_retriever` and nothing in
the runner, report or CLI changes.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrievekit.artifacts import fingerprint_files, fingerprint_json
from retrievekit.data.beir import RetrievalSplit
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.database import DatabaseIndex
from retrievekit.index.registry import index_class, index_type_info
from retrievekit.retrieval.base import Pipeline, Retriever
from retrievekit.retrieval.fusion import FUSIONS

if TYPE_CHECKING:
    from retrievekit.embeddings import EmbeddingSet
    from retrievekit.models.dense import DenseEncoder
    from retrievekit.models.m3 import M3Output
    from retrievekit.outputs import MultiVectors, SparseVectors

__all__ = [
    "Bm25Spec",
    "BuiltRetriever",
    "DenseSpec",
    "EncoderIndexSpec",
    "EvaluationCorpus",
    "FixedRetriever",
    "M3Spec",
    "MultiVectorSpec",
    "PipelineSpec",
    "RerankSpec",
    "RetrieverSpec",
    "SparseSpec",
    "SpecOptions",
    "corpus_embeddings",
    "corpus_m3_outputs",
    "corpus_sparse_vectors",
    "corpus_token_vectors",
    "make_spec",
    "register_retriever",
    "registered_retrievers",
    "spec_model_family",
    "spec_needs_model",
    "spec_second_family",
]

logger = logging.getLogger(__name__)


def _cached_corpus_output(
    encoder: Any,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    corpus_hash: str | None,
    subfolder: str,
    load: Callable[[Path], Any],
    encode: Callable[[Path], Any],
) -> tuple[Any, float, bool]:
    """The one cache of encoded corpora: a folder per (model, runtime, corpus) under
    ``cache_root/subfolder`` (``scratch`` without a cache), loaded when it is there and usable,
    else written by ``encode``. Returns the output, the seconds spent encoding and whether it was cached."""
    corpus_hash = corpus_hash or fingerprint_files([corpus_path])
    key = fingerprint_json({"model": encoder.fingerprint, "runtime": encoder.runtime, "corpus": corpus_hash})
    folder = scratch / key.removeprefix("sha256:")[:24]
    if cache_root is not None:
        folder = cache_root / subfolder / key.removeprefix("sha256:")[:24]
        if folder.is_dir():
            try:
                return load(folder), 0.0, True
            except ArtifactError as exc:
                logger.warning("re-encoding: the cached %s in %s are unusable (%s)", subfolder, folder, exc)
    started = time.perf_counter()
    output = encode(folder)
    return output, time.perf_counter() - started, False


def corpus_embeddings(
    encoder: DenseEncoder,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    batch_size: int = 32,
    corpus_hash: str | None = None,
    ray: Any = None,
) -> tuple[EmbeddingSet, float, bool]:
    """Encode a corpus once per (model, runtime, corpus): later calls load the cached vectors from
    ``cache_root/embeddings``. Without a cache the vectors go to ``scratch``. Returns the vectors,
    the seconds spent encoding and whether they came from the cache."""
    from retrievekit.embeddings import encode_to_directory, load_embeddings

    def encode(folder: Path) -> EmbeddingSet:
        if ray is not None:
            _encode_on_ray(encoder, corpus_path, folder, ray, batch_size)
            return load_embeddings(folder)
        return encode_to_directory(encoder, corpus_path, folder, side="documents", batch_size=batch_size)

    return _cached_corpus_output(
        encoder, corpus_path, cache_root=cache_root, scratch=scratch, corpus_hash=corpus_hash,
        subfolder="embeddings", load=load_embeddings, encode=encode,
    )  # fmt: skip


def _encode_on_ray(encoder: Any, corpus_path: Path, folder: Path, ray: Any, batch_size: int) -> None:
    from retrievekit.scale import encode_with_ray

    encode_with_ray(encoder, corpus_path, folder, settings=ray, batch_size=batch_size)


def _ray_rows(encoder: Any, corpus_path: Path, folder: Path, ray: Any, batch_size: int) -> Any:
    """The corpus's rows encoded on Ray (shards in a sibling of ``folder``, read back in one piece
    and removed): for the families whose cache keeps one collection."""
    import shutil

    from retrievekit.embeddings import read_encoded

    shards = folder.with_name(folder.name + "-ray")
    _encode_on_ray(encoder, corpus_path, shards, ray, batch_size)
    rows = read_encoded(shards)[1]
    rows = type(rows).concatenate([rows])  # in memory: the shard files go next
    shutil.rmtree(shards, ignore_errors=True)
    return rows


def _document_chunks(encoder: Any, corpus_path: Path, batch_size: int) -> Any:
    """A per-text family's encoded chunks of a corpus's documents, streamed, with a progress bar."""
    from retrievekit.data.readers import count_records, iter_documents

    return encoder.encode_chunks(
        (d.full_text for d in iter_documents(corpus_path)), "documents", batch_size=batch_size,
        show_progress=True, total=count_records(corpus_path),
    )  # fmt: skip


def corpus_token_vectors(
    encoder: Any,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    batch_size: int = 32,
    corpus_hash: str | None = None,
    ray: Any = None,
) -> tuple[MultiVectors, float, bool]:
    """A ColBERT model's token vectors of a corpus, streamed to disk once per (model, runtime,
    corpus): later calls load them (memory-mapped) from ``cache_root/multivectors``. Returns the
    vectors, the seconds spent encoding and whether they came from the cache."""
    from retrievekit.outputs import MultiVectors

    def encode(folder: Path) -> MultiVectors:
        if ray is not None:
            rows = _ray_rows(encoder, corpus_path, folder, ray, batch_size)
            return MultiVectors.write_stream(folder, [rows], encoder.dimension)
        chunks = _document_chunks(encoder, corpus_path, batch_size)
        return MultiVectors.write_stream(folder, chunks, encoder.dimension)

    return _cached_corpus_output(
        encoder, corpus_path, cache_root=cache_root, scratch=scratch, corpus_hash=corpus_hash,
        subfolder="multivectors", load=MultiVectors.load, encode=encode,
    )  # fmt: skip


def corpus_sparse_vectors(
    encoder: Any,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    batch_size: int = 32,
    corpus_hash: str | None = None,
    ray: Any = None,
) -> tuple[SparseVectors, float, bool]:
    """A sparse (SPLADE) model's vectors of a corpus, encoded once per (model, runtime, corpus):
    later calls load them (memory-mapped) from ``cache_root/sparse``."""
    from retrievekit.outputs import SparseVectors

    def encode(folder: Path) -> SparseVectors:
        if ray is not None:
            _ray_rows(encoder, corpus_path, folder, ray, batch_size).save(folder)
        else:
            SparseVectors.concatenate(list(_document_chunks(encoder, corpus_path, batch_size))).save(folder)
        return SparseVectors.load(folder)

    return _cached_corpus_output(
        encoder, corpus_path, cache_root=cache_root, scratch=scratch, corpus_hash=corpus_hash,
        subfolder="sparse", load=SparseVectors.load, encode=encode,
    )  # fmt: skip


def corpus_m3_outputs(
    encoder: Any,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    batch_size: int = 32,
    corpus_hash: str | None = None,
    ray: Any = None,
) -> tuple[M3Output, float, bool]:
    """A BGE-M3 model's three outputs of a corpus, from one pass, encoded once per (model, runtime,
    corpus): later calls load them (memory-mapped) from ``cache_root/m3``."""
    from retrievekit.models.m3 import M3Output

    if ray is not None:
        raise ConfigError("BGE-M3 models are not encoded on Ray yet: evaluate them with --engine local")

    def encode(folder: Path) -> M3Output:
        M3Output.concatenate(list(_document_chunks(encoder, corpus_path, batch_size))).save(folder)
        return M3Output.load(folder)

    return _cached_corpus_output(
        encoder, corpus_path, cache_root=cache_root, scratch=scratch, corpus_hash=corpus_hash,
        subfolder="m3", load=M3Output.load, encode=encode,
    )  # fmt: skip


@dataclass
class EvaluationCorpus:
    """The corpus an evaluation searches, with its content hash and the caches built on it."""

    split: RetrievalSplit
    corpus_path: Path
    corpus_hash: str
    cache_root: Path | None
    scratch: Path
    batch_size: int = 32
    ray: Any = None  # RaySettings: encode the corpus on Ray Data
    _encoded: dict[str, tuple[Any, float, bool]] = field(default_factory=dict)
    _built: dict[str, BuiltRetriever] = field(default_factory=dict)
    _pair_scores: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)

    def pair_scores(self, model: Any) -> dict[tuple[str, str], float]:
        """The ``(query, document id) -> score`` memo of one reranker model and runtime, shared by
        every row that reranks with it in this evaluation."""
        key = fingerprint_json({"model": model.fingerprint, "runtime": model.runtime})
        return self._pair_scores.setdefault(key, {})

    def embeddings(self, encoder: DenseEncoder) -> tuple[EmbeddingSet, float, bool]:
        """:func:`corpus_embeddings` of this corpus, once per evaluation."""
        return self._once("embeddings", encoder, corpus_embeddings)

    def token_vectors(self, encoder: Any) -> tuple[MultiVectors, float, bool]:
        """:func:`corpus_token_vectors` of this corpus, once per evaluation."""
        return self._once("token_vectors", encoder, corpus_token_vectors)

    def sparse_vectors(self, encoder: Any) -> tuple[SparseVectors, float, bool]:
        """:func:`corpus_sparse_vectors` of this corpus, once per evaluation."""
        return self._once("sparse_vectors", encoder, corpus_sparse_vectors)

    def m3_outputs(self, encoder: Any) -> tuple[M3Output, float, bool]:
        """:func:`corpus_m3_outputs` of this corpus, once per evaluation (every M3 mode shares it)."""
        return self._once("m3_outputs", encoder, corpus_m3_outputs)

    def _once(self, output: str, encoder: Any, encode: Callable[..., tuple[Any, float, bool]]) -> Any:
        """``encode(encoder, corpus, ...)`` the first time this model and runtime ask for ``output``."""
        key = fingerprint_json({"model": encoder.fingerprint, "runtime": encoder.runtime, "output": output})
        if key not in self._encoded:
            extra = {"ray": self.ray} if self.ray is not None else {}
            self._encoded[key] = encode(
                encoder, self.corpus_path, cache_root=self.cache_root, scratch=self.scratch,
                batch_size=self.batch_size, corpus_hash=self.corpus_hash, **extra,
            )  # fmt: skip
        return self._encoded[key]

    def build(self, spec: RetrieverSpec) -> BuiltRetriever:
        """``spec`` built once per evaluation (a hybrid reuses the members built before it)."""
        key = spec.fingerprint(self)
        if key not in self._built:
            self._built[key] = spec.build(self)
        return self._built[key]


@dataclass(frozen=True)
class BuiltRetriever:
    """A retriever ready to search, with the seconds its building took and what came from caches."""

    retriever: Retriever
    timing: dict[str, float]
    cached: dict[str, bool] = field(default_factory=dict)


class RetrieverSpec(ABC):
    """How to build one evaluated system for a corpus."""

    name: str
    model: str | None = None  # the model named in reports (None: no model, e.g. BM25)

    @abstractmethod
    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        """Everything that shapes this system's results on ``corpus``, known before building it."""

    @abstractmethod
    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever: ...


class EncoderIndexSpec(RetrieverSpec):
    """A model over an index of its family (``family``: ``dense`` or ``multivector``): checks the
    pair and fingerprints model, runtime, index type and settings, and corpus."""

    family: str = "dense"

    def __init__(self, encoder: Any, *, index_type: str, index_params: dict[str, Any] | None, name: str) -> None:
        if index_type_info(index_type).family != self.family:
            raise ConfigError(f"index type {index_type!r} is not a {self.family} index; choose one for {name}")
        if getattr(encoder, "family", "dense") != self.family:
            raise ConfigError(f"the {name} retriever needs a {self.family} model; {encoder.name!r} is not one")
        self.encoder, self.index_type, self.name = encoder, index_type, name
        self.index_params = dict(index_params or {})
        self.model = encoder.name

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return fingerprint_json(
            {
                "retriever": self.family,
                "model": self.encoder.fingerprint,
                "runtime": self.encoder.runtime,
                "index": self.index_type,
                "index_revision": index_class(self.index_type).revision,
                "params": self.index_params,
                "corpus": corpus.corpus_hash,
            }
        )

    def _params(self, corpus: EvaluationCorpus) -> dict[str, Any]:
        """The index parameters; a database index (which lives at a URI) gets a fresh one in this
        evaluation's scratch folder."""
        params = dict(self.index_params)
        if getattr(index_class(self.index_type), "backend", None) and "uri" not in params:
            suffix = ".db" if self.index_type.startswith("milvus") else ""
            params |= {"uri": str(corpus.scratch / f"{self.index_type}-{self.name}{suffix}"), "overwrite": True}
        return params

    def _index_corpus(
        self, corpus: EvaluationCorpus, items: Any, encode_s: float, cached: bool, retriever_class: Any
    ) -> BuiltRetriever:
        """The corpus's encoded ``items`` (one row per document) in a new index of this spec's type,
        behind ``retriever_class(encoder, index)``."""
        documents = corpus.split.corpus
        if len(items) != len(documents):
            raise ArtifactError(f"{len(items)} cached encoded rows for {len(documents)} documents")
        started = time.perf_counter()
        index_type: Any = index_class(self.index_type)
        index = index_type(self.encoder.dimension, **self._params(corpus))
        if index.family != self.family:
            raise ConfigError(f"{self.index_type} is not a {self.family} index")
        index.model_fingerprint = self.encoder.fingerprint
        index.add(documents.ids, items)
        if isinstance(index, DatabaseIndex):
            index.save()  # flush
        retriever = retriever_class(self.encoder, index, batch_size=corpus.batch_size, name=self.name)
        return BuiltRetriever(
            retriever, {"encode": encode_s, "index": time.perf_counter() - started}, {"embeddings": cached}
        )


class DenseSpec(EncoderIndexSpec):
    """A dense encoder over a vector index of any registered dense type."""

    def __init__(
        self, encoder: DenseEncoder, *, index_type: str = "flat", index_params: dict[str, Any] | None = None,
        name: str = "dense",
    ) -> None:  # fmt: skip
        super().__init__(encoder, index_type=index_type, index_params=index_params, name=name)

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.index.build import default_metric, fill_index, vector_index
        from retrievekit.retrieval.retriever import DenseRetriever

        embeddings, encode_s, cached = corpus.embeddings(self.encoder)
        started = time.perf_counter()
        params = self._params(corpus)
        index = vector_index(
            self.index_type, self.encoder.dimension, default_metric(self.encoder),
            model_fingerprint=self.encoder.fingerprint, **params,
        )  # fmt: skip
        fill_index(index, embeddings.ids, embeddings.vectors)
        if isinstance(index, DatabaseIndex):
            index.save()  # flush: the database builds its search structure (``ann``) now
        retriever = DenseRetriever(self.encoder, index, batch_size=corpus.batch_size, name=self.name)
        return BuiltRetriever(
            retriever, {"encode": encode_s, "index": time.perf_counter() - started}, {"embeddings": cached}
        )


class MultiVectorSpec(EncoderIndexSpec):
    """A ColBERT model over a multi-vector index (``plaid`` by default, or ``multivector-flat``).
    The corpus's token vectors are streamed to disk once per model, runtime and corpus (kept in the
    evaluation cache when there is one), then indexed from there."""

    family = "multivector"

    def __init__(
        self, encoder: Any, *, index_type: str = "plaid", index_params: dict[str, Any] | None = None,
        name: str = "colbert",
    ) -> None:  # fmt: skip
        super().__init__(encoder, index_type=index_type, index_params=index_params, name=name)

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.retrieval.retriever import MultiVectorRetriever

        return self._index_corpus(corpus, *corpus.token_vectors(self.encoder), MultiVectorRetriever)


class SparseSpec(EncoderIndexSpec):
    """A SPLADE model over the ``sparse`` inverted index. The corpus's vectors are encoded once per
    model, runtime and corpus (kept in the evaluation cache when there is one)."""

    family = "sparse"

    def __init__(
        self, encoder: Any, *, index_type: str = "sparse", index_params: dict[str, Any] | None = None,
        name: str = "sparse",
    ) -> None:  # fmt: skip
        super().__init__(encoder, index_type=index_type, index_params=index_params, name=name)

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.retrieval.retriever import SparseRetriever

        return self._index_corpus(corpus, *corpus.sparse_vectors(self.encoder), SparseRetriever)


class M3Spec(RetrieverSpec):
    """A BGE-M3 model searched by one of FlagEmbedding's modes (:class:`~retrievekit.retrieval.m3.M3Retriever`).
    The corpus is encoded once per model, runtime and corpus for all modes (one pass gives all three outputs)."""

    def __init__(
        self, encoder: Any, *, mode: str = "colbert+sparse+dense", weights: Sequence[float] | None = None,
        depth: int = 100, name: str = "m3",
    ) -> None:  # fmt: skip
        from retrievekit.models.m3 import check_weights
        from retrievekit.models.m3_format import DEFAULT_WEIGHTS, M3_MODES

        if getattr(encoder, "family", None) != "m3":
            raise ConfigError(f"the {name} retriever needs a BGE-M3 model; {encoder.name!r} is not one")
        if mode not in M3_MODES:
            raise ConfigError(f"unknown BGE-M3 mode {mode!r}; choose one of {', '.join(M3_MODES)}")
        self.encoder, self.mode, self.depth, self.name = encoder, mode, depth, name
        self.weights = check_weights(DEFAULT_WEIGHTS if weights is None else weights)
        self.model = encoder.name

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return fingerprint_json(
            {
                "retriever": "m3",
                "model": self.encoder.fingerprint,
                "runtime": self.encoder.runtime,
                "mode": self.mode,
                "weights": list(self.weights),
                "depth": self.depth,
                "corpus": corpus.corpus_hash,
            }
        )

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.retrieval.m3 import M3Retriever

        outputs, encode_s, cached = corpus.m3_outputs(self.encoder)
        if len(outputs) != len(corpus.split.corpus):
            raise ArtifactError(f"{len(outputs)} cached encoded rows for {len(corpus.split.corpus)} documents")
        started = time.perf_counter()
        retriever = M3Retriever(
            self.encoder, corpus.split.corpus.ids, outputs, mode=self.mode, weights=self.weights, depth=self.depth,
            batch_size=corpus.batch_size, name=self.name,
        )  # fmt: skip
        return BuiltRetriever(
            retriever, {"encode": encode_s, "index": time.perf_counter() - started}, {"embeddings": cached}
        )


class Bm25Spec(RetrieverSpec):
    """BM25 (bm25s) over the corpus's title + text."""

    def __init__(self, *, params: dict[str, Any] | None = None, name: str = "bm25") -> None:
        from retrievekit.index.bm25 import Bm25Index

        self.params, self.name = dict(params or {}), name
        self._config = Bm25Index(**self.params).config()

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return fingerprint_json({"retriever": "bm25", "bm25": self._config, "corpus": corpus.corpus_hash})

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.index.bm25 import Bm25Index
        from retrievekit.retrieval.retriever import Bm25Retriever

        started = time.perf_counter()
        index = Bm25Index(**self.params)
        index.add(corpus.split.corpus.ids, corpus.split.corpus.texts())
        return BuiltRetriever(Bm25Retriever(index, name=self.name), {"index": time.perf_counter() - started})


class PipelineSpec(RetrieverSpec):
    """Members fused by a :class:`~retrievekit.retrieval.Pipeline` (the hybrid: dense + BM25, RRF),
    with the pipeline's defaults: each member contributes its top ``max(top_k, depth)``."""

    def __init__(
        self,
        members: Sequence[RetrieverSpec],
        *,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
        rrf_k: int = 60,
        depth: int = 100,
        name: str = "hybrid",
    ) -> None:
        if len(members) < 2:
            raise ConfigError(f"{name} needs at least two member retrievers")
        self.members, self.fusion, self.weights, self.rrf_k, self.depth, self.name = (
            list(members), fusion, None if weights is None else list(weights), rrf_k, depth, name,
        )  # fmt: skip
        models = {m.model for m in self.members if m.model}
        self.model = ", ".join(sorted(models)) or None

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return fingerprint_json(
            {
                "pipeline": [m.fingerprint(corpus) for m in self.members],
                "fusion": self.fusion,
                "weights": self.weights,
                "rrf_k": self.rrf_k,
                "depth": self.depth,
            }
        )

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        built = [corpus.build(m) for m in self.members]
        pipeline = Pipeline(
            [b.retriever for b in built], fusion=self.fusion, weights=self.weights, rrf_k=self.rrf_k,
            depth=self.depth, name=self.name,
        )  # fmt: skip
        timing: dict[str, float] = {}
        for member in built:
            for key, value in member.timing.items():
                timing[key] = timing.get(key, 0.0) + value
        return BuiltRetriever(pipeline, timing, {k: v for b in built for k, v in b.cached.items()})


class RerankSpec(RetrieverSpec):
    """A first stage's top ``top_k`` re-scored by a cross-encoder (a
    :class:`~retrievekit.retrieval.Pipeline` with a :class:`~retrievekit.retrieval.rerankers.CrossEncoderReranker`),
    named ``FIRST>rerank``; the first stage is built once, shared with its own row. With ``fusion``
    (``rrf``, ``weighted``) the reranker's order is fused with the first stage's (row
    ``FIRST>rerank+rrf``); rows reranking with the same model share its scores."""

    def __init__(
        self, first: RetrieverSpec, model: Any, *, top_k: int = 100, fusion: str | None = None, name: str | None = None
    ) -> None:
        if getattr(model, "family", None) != "cross_encoder":
            raise ConfigError(f"reranking needs a cross-encoder; {getattr(model, 'name', model)!r} is not one")
        if top_k < 1:
            raise ConfigError(f"the rerank depth must be at least 1, got {top_k}")
        if fusion is not None and fusion not in FUSIONS:
            raise ConfigError(f"unknown rerank fusion {fusion!r}; choose none or one of {', '.join(FUSIONS)}")
        self.first, self.reranker_model, self.top_k, self.fusion = first, model, top_k, fusion
        self.name = name or f"{first.name}>rerank" + (f"+{fusion}" if fusion else "")
        self.model = ", ".join(m for m in (first.model, model.name) if m)

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return fingerprint_json(
            {
                "first": self.first.fingerprint(corpus),
                "reranker": self.reranker_model.fingerprint,
                "runtime": self.reranker_model.runtime,
                "rerank_top_k": self.top_k,
                **({"rerank_fusion": self.fusion} if self.fusion else {}),
            }
        )

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        from retrievekit.retrieval.rerankers import CrossEncoderReranker

        first = corpus.build(self.first)
        documents = dict(zip(corpus.split.corpus.ids, corpus.split.corpus.texts(), strict=True))
        reranker = CrossEncoderReranker(
            self.reranker_model, documents, batch_size=corpus.batch_size, memo=corpus.pair_scores(self.reranker_model)
        )
        pipeline = Pipeline(
            [first.retriever], reranker=reranker, rerank_top_k=self.top_k, rerank_fusion=self.fusion, name=self.name
        )
        return BuiltRetriever(pipeline, dict(first.timing), dict(first.cached))


class FixedRetriever(RetrieverSpec):
    """An already built retriever (its index holds the corpus): its own fingerprint keys the cache."""

    def __init__(self, retriever: Retriever, *, model: str | None = None) -> None:
        self.retriever, self.name = retriever, retriever.name
        encoder = getattr(retriever, "encoder", None)
        self.model = model if model is not None else getattr(encoder, "name", None)

    def fingerprint(self, corpus: EvaluationCorpus) -> str:
        return self.retriever.fingerprint

    def build(self, corpus: EvaluationCorpus) -> BuiltRetriever:
        return BuiltRetriever(self.retriever, {})


@dataclass(frozen=True)
class SpecOptions:
    """What the CLI (or a caller) knows when it turns retriever names into specs: the model (a
    DenseEncoder, a ColbertEncoder, ...) and, for hybrids across families, ``others`` (models of
    other families); ``index_type`` for the model's index."""

    encoder: Any = None
    index_type: str | None = None
    index_params: dict[str, Any] = field(default_factory=dict)
    fusion: str = "rrf"
    others: tuple[Any, ...] = ()

    def model_of(self, family: str) -> Any:
        """The model of ``family`` among those given (the first model when none is: its spec then says
        what is wrong)."""
        for model in (self.encoder, *self.others):
            if model is not None and getattr(model, "family", "dense") == family:
                return model
        return self.encoder

    def index_for(self, family: str, default: str) -> str:
        """``index_type`` for ``family``'s retriever; with models of several families, only the
        family whose index it is takes it (the others their ``default``)."""
        if self.index_type is None:
            return default
        if self.others and index_type_info(self.index_type).family != family:
            return default
        return self.index_type


@dataclass(frozen=True)
class _Registration:
    factory: Callable[[SpecOptions], RetrieverSpec]
    needs_model: bool
    description: str
    model_family: str | None = None
    second_family: str | None = None


_REGISTRY: dict[str, _Registration] = {}


def register_retriever(
    name: str,
    factory: Callable[[SpecOptions], RetrieverSpec],
    *,
    needs_model: bool,
    description: str = "",
    model_family: str | None = None,
    second_family: str | None = None,
) -> None:
    """Make ``--retriever NAME`` (and ``systems=[NAME]``) build ``factory(options)``; ``model_family``
    is the family of model it needs when that decides how a folder is read (``sparse``: a plain
    masked-LM folder is a SPLADE model); ``second_family``: a hybrid across families needs a second
    model, of that family (``--second-model``)."""
    _REGISTRY[name] = _Registration(factory, needs_model, description, model_family, second_family)


def registered_retrievers() -> dict[str, str]:
    """Name -> description of every registered retriever."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def spec_needs_model(name: str) -> bool:
    return _registration(name).needs_model


def spec_model_family(name: str) -> str | None:
    """The model family the retriever ``name`` needs, when it says."""
    return _registration(name).model_family


def spec_second_family(name: str) -> str | None:
    """The family of the second model a cross-family hybrid needs (None: one model)."""
    return _registration(name).second_family


def _registration(name: str) -> _Registration:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown retriever {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_spec(name: str, options: SpecOptions) -> RetrieverSpec:
    """The spec registered under ``name``, built from ``options``."""
    entry = _registration(name)
    if entry.needs_model and options.encoder is None:
        raise ConfigError(f"the {name} retriever needs a model (--model)")
    if entry.second_family is not None:
        model = options.model_of(entry.second_family)
        if model is None or getattr(model, "family", "dense") != entry.second_family:
            raise ConfigError(
                f"the {name} retriever needs a second model, a {entry.second_family} one (--second-model)"
            )
    return entry.factory(options)


def _dense(options: SpecOptions) -> RetrieverSpec:
    encoder = options.model_of("dense")
    assert encoder is not None
    if getattr(encoder, "family", "dense") != "dense":
        raise ConfigError(f"the dense retriever needs a dense model; use --retriever colbert for {encoder.name}")
    return DenseSpec(encoder, index_type=options.index_for("dense", "flat"), index_params=options.index_params)


def _colbert(options: SpecOptions) -> RetrieverSpec:
    return MultiVectorSpec(
        options.model_of("multivector"), index_type=options.index_for("multivector", "plaid"),
        index_params=options.index_params,
    )  # fmt: skip


def _colbert_hybrid(options: SpecOptions) -> RetrieverSpec:
    return PipelineSpec([_colbert(options), _bm25(options)], fusion=options.fusion, name="colbert-hybrid")


def _sparse(options: SpecOptions) -> RetrieverSpec:
    return SparseSpec(
        options.model_of("sparse"), index_type=options.index_for("sparse", "sparse"), index_params=options.index_params
    )


def _sparse_dense(options: SpecOptions) -> RetrieverSpec:
    return PipelineSpec([_sparse(options), _dense(options)], fusion=options.fusion, name="sparse-dense")


def _sparse_colbert(options: SpecOptions) -> RetrieverSpec:
    return PipelineSpec([_sparse(options), _colbert(options)], fusion=options.fusion, name="sparse-colbert")


def _sparse_hybrid(options: SpecOptions) -> RetrieverSpec:
    return PipelineSpec([_sparse(options), _bm25(options)], fusion=options.fusion, name="sparse-hybrid")


def _bm25(options: SpecOptions) -> RetrieverSpec:
    return Bm25Spec()


def _hybrid(options: SpecOptions) -> RetrieverSpec:
    return PipelineSpec([_dense(options), _bm25(options)], fusion=options.fusion, name="hybrid")


register_retriever("dense", _dense, needs_model=True, description="the model over a dense index (--index-type)")
register_retriever("bm25", _bm25, needs_model=False, description="BM25 (bm25s, English stemming and stopwords)")
register_retriever("hybrid", _hybrid, needs_model=True, description="dense + BM25, reciprocal rank fusion")
register_retriever(
    "colbert",
    _colbert,
    needs_model=True,
    description="a ColBERT model, MaxSim over plaid (or --index-type multivector-flat)",
)
register_retriever(
    "colbert-hybrid", _colbert_hybrid, needs_model=True, description="ColBERT + BM25, reciprocal rank fusion"
)
register_retriever(
    "sparse", _sparse, needs_model=True, model_family="sparse",
    description="a SPLADE model over the sparse inverted index (exact sparse dot product)",
)  # fmt: skip
register_retriever(
    "sparse-hybrid", _sparse_hybrid, needs_model=True, model_family="sparse",
    description="SPLADE + BM25, reciprocal rank fusion",
)  # fmt: skip
register_retriever(
    "sparse-dense", _sparse_dense, needs_model=True, model_family="sparse", second_family="dense",
    description="SPLADE (--model) + a dense model (--second-model), reciprocal rank fusion",
)  # fmt: skip
register_retriever(
    "sparse-colbert", _sparse_colbert, needs_model=True, model_family="sparse", second_family="multivector",
    description="SPLADE (--model) + a ColBERT model (--second-model), reciprocal rank fusion",
)  # fmt: skip


def _m3_mode(mode: str, name: str) -> Callable[[SpecOptions], RetrieverSpec]:
    return lambda options: M3Spec(options.model_of("m3"), mode=mode, name=name)


for _mode, _name, _text in (
    ("colbert+sparse+dense", "m3", "BGE-M3, FlagEmbedding's colbert+sparse+dense score (weights 1:1:1) over the "
     "dense and sparse top 100"),
    ("sparse+dense", "m3-sparse-dense", "BGE-M3, sparse+dense score over the dense and sparse top 100"),
    ("dense", "m3-dense", "BGE-M3's dense vectors, exact search"),
    ("sparse", "m3-sparse", "BGE-M3's lexical weights, exact sparse dot product"),
    ("colbert", "m3-colbert", "BGE-M3's multi-vectors, exact MaxSim (mean over query vectors)"),
):  # fmt: skip
    register_retriever(_name, _m3_mode(_mode, _name), needs_model=True, model_family="m3", description=_text)
