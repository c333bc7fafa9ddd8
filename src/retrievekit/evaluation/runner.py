"""BEIR-style evaluation: retrieve for every judged query of a split, score with pytrec_eval.

Steps, each a small function: load the split -> corpus embeddings (cached by model fingerprint,
runtime and corpus hash) -> index -> search -> drop identical ids -> metrics -> compare. Runs are
cached too (keyed by everything that shapes them), so a second evaluation re-encodes nothing.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrievekit.artifacts import fingerprint_files, fingerprint_json
from retrievekit.data.beir import BeirDataset, RetrievalSplit, load_dataset
from retrievekit.data.readers import read_trec_run
from retrievekit.data.records import Run, ScoredDocument
from retrievekit.data.writers import write_trec_run
from retrievekit.embeddings import EmbeddingSet, encode_to_directory, load_embeddings
from retrievekit.errors import ArtifactError, ConfigError, DataFormatError
from retrievekit.evaluation.metrics import DEFAULT_K_VALUES, MetricsResult, compute_metrics
from retrievekit.evaluation.significance import PairedTest, paired_t_test
from retrievekit.index.base import index_class
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.build import default_metric, fill_index
from retrievekit.models.dense import DenseEncoder
from retrievekit.resolve import cache_dir
from retrievekit.retrieval.fusion import fuse
from retrievekit.retrieval.retriever import Retriever, run_from_hits

__all__ = [
    "SYSTEMS",
    "Evaluation",
    "SystemResult",
    "corpus_embeddings",
    "evaluate",
    "evaluate_dataset",
    "remove_identical_ids",
]

logger = logging.getLogger(__name__)

SYSTEMS = ("dense", "bm25", "hybrid")


@dataclass(frozen=True)
class SystemResult:
    """One retriever evaluated on one split."""

    retriever: str
    run: Run
    metrics: MetricsResult
    timing: dict[str, float]
    removed_identical: int = 0
    cached: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """Several systems on the same split; each compared with the first by a paired t-test."""

    dataset: str
    split: str
    model: str | None
    systems: list[SystemResult]
    significance: dict[str, PairedTest]
    num_queries: int
    settings: dict[str, object]
    peak_rss_mib: float


def remove_identical_ids(run: Run) -> tuple[Run, int]:
    """Drop, for every query, a retrieved document whose id equals the query's id (as BEIR does for
    ArguAna and Quora, where queries are also documents). Returns the run and how many were dropped."""
    removed = 0
    kept: dict[str, list[ScoredDocument]] = {}
    for qid in run:
        docs = run[qid]
        filtered = [d for d in docs if d.doc_id != qid]
        removed += len(docs) - len(filtered)
        kept[qid] = filtered
    return Run(kept), removed


def evaluate(
    retriever: Retriever,
    split: RetrievalSplit,
    *,
    top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    ignore_identical_ids: bool = True,
) -> SystemResult:
    """Evaluate any retriever on a loaded split (no caching: the retriever is already built)."""
    started = time.perf_counter()
    run = run_from_hits(split.queries.ids, retriever.search(split.queries.texts(), top_k))
    search_s = time.perf_counter() - started
    removed = 0
    if ignore_identical_ids:
        run, removed = remove_identical_ids(run)
    metrics = compute_metrics(split.qrels, run, k_values)
    return SystemResult(
        getattr(retriever, "name", type(retriever).__name__), run, metrics, {"search": search_s}, removed
    )


def corpus_embeddings(
    encoder: DenseEncoder,
    corpus_path: Path,
    *,
    cache_root: Path | None,
    scratch: Path,
    batch_size: int = 32,
    corpus_hash: str | None = None,
) -> tuple[EmbeddingSet, float, bool]:
    """Encode a corpus once per (model, runtime, corpus): later calls load the cached vectors from
    ``cache_root/embeddings``. Without a cache the vectors go to ``scratch``. Returns the vectors,
    the seconds spent encoding and whether they came from the cache."""
    corpus_hash = corpus_hash or fingerprint_files([corpus_path])
    key = fingerprint_json({"model": encoder.fingerprint, "runtime": encoder.runtime, "corpus": corpus_hash})
    if cache_root is None:
        folder = scratch / "corpus"
    else:
        folder = cache_root / "embeddings" / key.removeprefix("sha256:")[:24]
        if folder.is_dir():
            try:
                return load_embeddings(folder), 0.0, True
            except ArtifactError as exc:
                logger.warning("re-encoding: the cached embeddings in %s are unusable (%s)", folder, exc)
    started = time.perf_counter()
    embeddings = encode_to_directory(encoder, corpus_path, folder, side="documents", batch_size=batch_size)
    return embeddings, time.perf_counter() - started, False


class _Context:
    """What the systems of one evaluation share: the split, the encoder, caches and timings."""

    def __init__(
        self,
        beir: BeirDataset,
        split: RetrievalSplit,
        encoder: DenseEncoder | None,
        *,
        top_k: int,
        index_type: str,
        batch_size: int,
        cache_root: Path | None,
    ) -> None:
        self.beir, self.split, self.encoder = beir, split, encoder
        self.top_k, self.index_type, self.batch_size = top_k, index_type, batch_size
        self.cache_root = cache_root
        self.scratch = tempfile.TemporaryDirectory(prefix="retrievekit-eval-")
        self.corpus_hash = fingerprint_files([beir.corpus_path])
        self.queries_hash = fingerprint_files([beir.queries_path, beir.qrels_path(split.split)])
        self.runs: dict[str, tuple[Run, dict[str, float], dict[str, bool]]] = {}

    def run_key(self, system: str) -> str:
        parts: dict[str, object] = {
            "run_format": 2,
            "system": system,
            "corpus": self.corpus_hash,
            "queries": self.queries_hash,
            "top_k": self.top_k,
        }
        if system in ("dense", "hybrid"):
            parts |= {"model": self.encoder.fingerprint, "runtime": self.encoder.runtime, "index": self.index_type}
        if system in ("bm25", "hybrid"):
            parts |= {"bm25": Bm25Index().config()}
        return fingerprint_json(parts).removeprefix("sha256:")[:24]

    def cached_run(self, system: str) -> Run | None:
        if self.cache_root is None:
            return None
        path = self.cache_root / "runs" / f"{system}-{self.run_key(system)}.trec"
        if not path.is_file():
            return None
        try:
            return read_trec_run(path)
        except DataFormatError as exc:
            logger.warning("ignoring a damaged cached run %s: %s", path, exc)
            return None

    def store_run(self, system: str, run: Run) -> None:
        if self.cache_root is not None:
            write_trec_run(run, self.cache_root / "runs" / f"{system}-{self.run_key(system)}.trec", tag=system)

    def corpus_embeddings(self) -> tuple[EmbeddingSet, float, bool]:
        return corpus_embeddings(
            self.encoder, self.beir.corpus_path, cache_root=self.cache_root, scratch=Path(self.scratch.name),
            batch_size=self.batch_size, corpus_hash=self.corpus_hash,
        )  # fmt: skip

    def system_run(self, system: str) -> tuple[Run, dict[str, float], dict[str, bool]]:
        if system in self.runs:
            return self.runs[system]
        cached = self.cached_run(system)
        if cached is not None:
            result = (cached, {"encode": 0.0, "index": 0.0, "search": 0.0}, {"run": True})
        elif system == "dense":
            result = self._dense()
        elif system == "bm25":
            result = self._bm25()
        else:
            result = self._hybrid()
        if cached is None:
            self.store_run(system, result[0])
        self.runs[system] = result
        return result

    def _dense(self) -> tuple[Run, dict[str, float], dict[str, bool]]:
        if self.encoder is None:
            raise ConfigError("the dense and hybrid retrievers need a model")
        embeddings, encode_s, cached = self.corpus_embeddings()
        started = time.perf_counter()
        cls = index_class(self.index_type)
        index = cls(self.encoder.dimension, default_metric(self.encoder), model_fingerprint=self.encoder.fingerprint)
        fill_index(index, embeddings.ids, embeddings.vectors)
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        queries = self.encoder.encode_queries(self.split.queries.texts(), batch_size=self.batch_size)
        query_s = time.perf_counter() - started
        started = time.perf_counter()
        run = run_from_hits(self.split.queries.ids, index.search(queries, self.top_k))
        return (
            run,
            {"encode": encode_s + query_s, "index": index_s, "search": time.perf_counter() - started},
            {"embeddings": cached},
        )

    def _bm25(self) -> tuple[Run, dict[str, float], dict[str, bool]]:
        started = time.perf_counter()
        index = Bm25Index()
        corpus = self.split.corpus
        index.add(corpus.ids, corpus.texts())
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        run = run_from_hits(self.split.queries.ids, index.search(self.split.queries.texts(), self.top_k))
        return run, {"encode": 0.0, "index": index_s, "search": time.perf_counter() - started}, {}

    def _hybrid(self) -> tuple[Run, dict[str, float], dict[str, bool]]:
        from retrievekit.index.base import Hits

        parts = [self.system_run("dense"), self.system_run("bm25")]
        started = time.perf_counter()
        fused = {}
        for qid in self.split.queries.ids:
            lists = [
                Hits([d.doc_id for d in run[qid]], np.array([d.score for d in run[qid]]))
                if qid in run
                else Hits([], np.empty(0))
                for run, _, _ in parts
            ]
            hits = fuse(lists, method="rrf", k=self.top_k)
            fused[qid] = list(zip(hits.ids, hits.scores.tolist(), strict=True))
        timing = {key: sum(t[key] for _, t, _ in parts) for key in ("encode", "index", "search")}
        timing["search"] += time.perf_counter() - started
        return Run(fused), timing, {}


def evaluate_dataset(
    dataset: str | Path,
    *,
    split: str = "test",
    systems: Sequence[str] = ("dense",),
    encoder: DenseEncoder | None = None,
    index_type: str = "flat",
    top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    ignore_identical_ids: bool = True,
    batch_size: int = 32,
    strict: bool = True,
    cache: bool = True,
    cache_root: Path | None = None,
) -> Evaluation:
    """Evaluate several systems (``dense``, ``bm25``, ``hybrid`` = RRF of the two) on a BEIR split."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise ConfigError(f"unknown retriever(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    if len(set(systems)) != len(systems):
        raise ConfigError(f"a retriever is listed twice: {list(systems)}")
    if encoder is None and any(s in ("dense", "hybrid") for s in systems):
        raise ConfigError("the dense and hybrid retrievers need a model")
    beir = load_dataset(dataset)
    loaded = beir.load(split, strict=strict)
    if not len(loaded.queries):
        raise DataFormatError(beir.qrels_path(split), "no judged query of this split has a text in the queries file")
    root = (cache_root or cache_dir() / "evaluation") if cache else None
    context = _Context(
        beir,
        loaded,
        encoder,
        top_k=top_k,
        index_type=index_type,
        batch_size=batch_size,
        cache_root=root,
    )
    results = []
    try:
        for system in systems:
            run, timing, cached = context.system_run(system)
            removed = 0
            if ignore_identical_ids:
                run, removed = remove_identical_ids(run)
            metrics = compute_metrics(loaded.qrels, run, k_values)
            results.append(SystemResult(system, run, metrics, dict(timing), removed, dict(cached)))
            logger.info("%s: ndcg@10 %.4f", system, metrics.aggregate.get("ndcg@10", float("nan")))
    finally:
        context.scratch.cleanup()
    primary_metric = "ndcg@10" if 10 in k_values else f"ndcg@{sorted(k_values)[0]}"
    significance = {
        r.retriever: paired_t_test(
            results[0].metrics.values(primary_metric), r.metrics.values(primary_metric), primary_metric
        )
        for r in results[1:]
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = {
        "top_k": top_k,
        "k_values": sorted(set(k_values)),
        "index_type": index_type,
        "ignore_identical_ids": ignore_identical_ids,
        "runtime": encoder.runtime if encoder else None,
        "queries_without_judgements": loaded.unjudged_queries,
    }
    if loaded.unjudged_queries:
        logger.info("%d queries have no judgements in split %s and are not evaluated", loaded.unjudged_queries, split)
    return Evaluation(
        beir.name, split, encoder.name if encoder else None, results, significance, len(loaded.queries), settings, peak
    )
