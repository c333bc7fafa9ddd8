"""BEIR-style evaluation of any retriever or pipeline: retrieve for every judged query of a split,
score with pytrec_eval.

Steps, each a small function: load the split -> for each system (a registered name, a
:class:`~retrievekit.evaluation.systems.RetrieverSpec` or a built
:class:`~retrievekit.retrieval.Retriever`) find its cached run by fingerprint, or build it on the
corpus (corpus embeddings cached per model) and search -> drop identical ids -> metrics -> compare.
Runs are cached under the system's fingerprint and the data hashes, so a second evaluation
re-encodes nothing.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrievekit.artifacts import fingerprint_files, fingerprint_json, scratch_directory
from retrievekit.data.beir import RetrievalSplit, load_dataset
from retrievekit.data.readers import read_trec_run
from retrievekit.data.records import Qrels, Run, ScoredDocument
from retrievekit.data.writers import write_trec_run
from retrievekit.errors import ConfigError, DataFormatError
from retrievekit.evaluation.metrics import DEFAULT_K_VALUES, MetricsResult, compute_metrics
from retrievekit.evaluation.significance import PairedTest, paired_t_test
from retrievekit.evaluation.systems import (
    EvaluationCorpus,
    FixedRetriever,
    RerankSpec,
    RetrieverSpec,
    SpecOptions,
    corpus_embeddings,
    make_spec,
    registered_retrievers,
)
from retrievekit.resolve import cache_dir
from retrievekit.retrieval.base import Retriever, run_from_hits

if TYPE_CHECKING:
    pass

__all__ = [
    "Evaluation",
    "System",
    "SystemResult",
    "corpus_embeddings",
    "evaluate",
    "evaluate_dataset",
    "remove_identical_ids",
]

logger = logging.getLogger(__name__)

_RUN_FORMAT = 3
System = str | RetrieverSpec | Retriever


@dataclass(frozen=True)
class SystemResult:
    """One retriever evaluated on one split."""

    retriever: str
    run: Run
    metrics: MetricsResult
    timing: dict[str, float]
    removed_identical: int = 0
    cached: dict[str, bool] = field(default_factory=dict)
    model: str | None = None
    fingerprint: str | None = None
    removed_relevant: int = 0  # removed identical-id results that the qrels judge relevant


def _drop_identical(run: Run, qrels: Qrels, enabled: bool) -> tuple[Run, int, int]:
    """BEIR's rule (when ``enabled``), with a count of the removed results that were judged relevant:
    on collections that number queries and documents separately those are real answers."""
    if not enabled:
        return run, 0, 0
    judged_relevant = sum(1 for qid in run if qid in qrels.relevant(qid) and any(d.doc_id == qid for d in run[qid]))
    kept, removed = remove_identical_ids(run)
    return kept, removed, judged_relevant


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
    """Evaluate any retriever or pipeline on a loaded split (no caching: it is already built)."""
    started = time.perf_counter()
    run = run_from_hits(split.queries.ids, retriever.search(split.queries.texts(), top_k))
    search_s = time.perf_counter() - started
    run, removed, removed_relevant = _drop_identical(run, split.qrels, ignore_identical_ids)
    metrics = compute_metrics(split.qrels, run, k_values)
    return SystemResult(
        retriever.name, run, metrics, {"search": search_s}, removed, {}, FixedRetriever(retriever).model,
        retriever.fingerprint, removed_relevant,
    )  # fmt: skip


class _RunCache:
    """Runs stored as TREC files under ``root/runs``, keyed by system fingerprint and data hashes."""

    def __init__(self, root: Path | None, queries_hash: str, top_k: int) -> None:
        self.root, self.queries_hash, self.top_k = root, queries_hash, top_k

    def _path(self, name: str, fingerprint: str) -> Path | None:
        if self.root is None:
            return None
        key = fingerprint_json(
            {"run_format": _RUN_FORMAT, "system": fingerprint, "queries": self.queries_hash, "top_k": self.top_k}
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / "runs" / f"{safe}-{key.removeprefix('sha256:')[:24]}.trec"

    def get(self, name: str, fingerprint: str) -> Run | None:
        path = self._path(name, fingerprint)
        if path is None or not path.is_file():
            return None
        try:
            return read_trec_run(path)
        except DataFormatError as exc:
            logger.warning("ignoring a damaged cached run %s: %s", path, exc)
            return None

    def put(self, name: str, fingerprint: str, run: Run) -> None:
        path = self._path(name, fingerprint)
        if path is not None:
            write_trec_run(run, path, tag=name)


def _as_spec(system: System, options: SpecOptions) -> RetrieverSpec:
    if isinstance(system, RetrieverSpec):
        return system
    if isinstance(system, Retriever):
        return FixedRetriever(system)
    if isinstance(system, str):
        return make_spec(system, options)
    raise ConfigError(f"a system is a retriever name, a RetrieverSpec or a Retriever, not {type(system).__name__}")


def _run_system(
    spec: RetrieverSpec, corpus: EvaluationCorpus, cache: _RunCache, split: RetrievalSplit, top_k: int
) -> tuple[Run, dict[str, float], dict[str, bool], str]:
    fingerprint = spec.fingerprint(corpus)
    cached = cache.get(spec.name, fingerprint)
    if cached is not None:
        return cached, {"encode": 0.0, "index": 0.0, "search": 0.0}, {"run": True}, fingerprint
    built = corpus.build(spec)
    started = time.perf_counter()
    run = run_from_hits(split.queries.ids, built.retriever.search(split.queries.texts(), top_k))
    timing = {"encode": 0.0, "index": 0.0, **built.timing, "search": time.perf_counter() - started}
    cache.put(spec.name, fingerprint, run)
    return run, timing, dict(built.cached), fingerprint


def evaluate_dataset(
    dataset: str | Path,
    *,
    split: str = "test",
    systems: Sequence[System] = ("dense",),
    encoder: Any = None,
    index_type: str | None = None,
    top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    ignore_identical_ids: bool = True,
    batch_size: int = 32,
    strict: bool = True,
    cache: bool = True,
    cache_root: Path | None = None,
    reranker: Any = None,
    rerank_top_k: int = 100,
    rerank_fusion: Sequence[str | None] = (None,),
    ray: Any = None,
) -> Evaluation:
    """Evaluate several systems on a BEIR split and compare them with the first.

    A system is a registered retriever name (``dense``, ``bm25``, ``hybrid`` = RRF of the two; see
    :func:`~retrievekit.evaluation.systems.registered_retrievers`), built from ``encoder`` (a model,
    or a list of models of different families for hybrids across them: ``sparse-dense``) and
    ``index_type`` (``None``: each family's default, ``flat`` for dense models and ``plaid`` for
    ColBERT ones); a :class:`~retrievekit.evaluation.systems.RetrieverSpec`; or a built
    :class:`~retrievekit.retrieval.Retriever` (a Pipeline too) whose index already holds the corpus.
    With ``reranker`` (a cross-encoder), each system's top ``rerank_top_k`` is also reranked, in rows
    named ``SYSTEM>rerank`` after the first stages; ``rerank_fusion`` lists the ways the reranker's
    order meets the first stage's: ``None`` (it replaces it), ``rrf`` or ``weighted`` (fused with it,
    rows ``SYSTEM>rerank+rrf``); every row scores each pair once. ``ray``
    (:class:`~retrievekit.scale.RaySettings`): encode the corpus on Ray Data (same rows, same cache).
    """
    if not systems:
        raise ConfigError(f"no retriever to evaluate; choose from {', '.join(registered_retrievers())}")
    models = list(encoder) if isinstance(encoder, list | tuple) else [encoder]
    options = SpecOptions(encoder=models[0], index_type=index_type, others=tuple(models[1:]))
    specs = [_as_spec(s, options) for s in systems]
    if reranker is not None:  # each first stage, then each reranked, in the same table
        specs += [
            RerankSpec(spec, reranker, top_k=rerank_top_k, fusion=fusion)
            for fusion in dict.fromkeys(rerank_fusion) for spec in list(specs)
        ]  # fmt: skip
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a retriever is listed twice: {names}")
    beir = load_dataset(dataset)
    loaded = beir.load(split, strict=strict)
    if not len(loaded.queries):
        raise DataFormatError(beir.qrels_path(split), "no judged query of this split has a text in the queries file")
    root = (cache_root or cache_dir() / "evaluation") if cache else None
    queries_hash = fingerprint_files([beir.queries_path, beir.qrels_path(split)])
    run_cache = _RunCache(root, queries_hash, top_k)
    results = []
    with scratch_directory("eval") as scratch:
        corpus = EvaluationCorpus(
            loaded, beir.corpus_path, fingerprint_files([beir.corpus_path]), root, scratch, batch_size, ray=ray
        )
        for spec in specs:
            run, timing, cached, fingerprint = _run_system(spec, corpus, run_cache, loaded, top_k)
            run, removed, removed_relevant = _drop_identical(run, loaded.qrels, ignore_identical_ids)
            metrics = compute_metrics(loaded.qrels, run, k_values)
            results.append(
                SystemResult(
                    spec.name, run, metrics, timing, removed, cached, spec.model, fingerprint, removed_relevant
                )
            )
            logger.info("%s: ndcg@10 %.4f", spec.name, metrics.aggregate.get("ndcg@10", float("nan")))
    primary_metric = "ndcg@10" if 10 in k_values else f"ndcg@{sorted(k_values)[0]}"
    significance = {
        r.retriever: paired_t_test(
            results[0].metrics.values(primary_metric), r.metrics.values(primary_metric), primary_metric
        )
        for r in results[1:]
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    given = [m for m in models if m is not None]
    runtimes = sorted({str(e.runtime) for s in specs if (e := getattr(s, "encoder", None)) is not None})
    settings = {
        "top_k": top_k,
        "k_values": sorted(set(k_values)),
        "index_type": index_type,
        "ignore_identical_ids": ignore_identical_ids,
        "runtime": ", ".join(runtimes) or (", ".join(sorted({str(m.runtime) for m in given})) or None),
        "queries_without_judgements": loaded.unjudged_queries,
    }
    if loaded.unjudged_queries:
        logger.info("%d queries have no judgements in split %s and are not evaluated", loaded.unjudged_queries, split)
    named = [r.model for r in results if r.model]
    model = ", ".join(m.name for m in given) if given else (named[0] if named else None)
    return Evaluation(beir.name, split, model, results, significance, len(loaded.queries), settings, peak)
