"""The one metrics adapter: retrieval metrics computed by pytrec_eval (trec_eval, as BEIR and MTEB use).

Names are ``ndcg@k``, ``recall@k``, ``mrr@k``, ``map@k`` and ``precision@k``. MRR@k is trec_eval's
reciprocal rank on each query's top k, as BEIR computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrievekit._optional import require
from retrievekit.data.records import Qrels, Run
from retrievekit.errors import ConfigError

__all__ = ["DEFAULT_K_VALUES", "METRIC_FAMILIES", "MetricsResult", "compute_metrics"]

DEFAULT_K_VALUES = (1, 3, 5, 10, 100, 1000)
METRIC_FAMILIES = ("ndcg", "recall", "mrr", "map", "precision")
_TREC_MEASURE = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "precision": "P"}


@dataclass(frozen=True)
class MetricsResult:
    """Mean metrics over the evaluated queries and the per-query values they average."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def values(self, metric: str) -> np.ndarray:
        """One metric for every query, in a stable (sorted query id) order, for paired tests."""
        return np.array([self.per_query[qid][metric] for qid in sorted(self.per_query)])


def compute_metrics(
    qrels: Qrels,
    run: Run,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    families: Sequence[str] = METRIC_FAMILIES,
) -> MetricsResult:
    """Evaluate ``run`` against ``qrels`` over every judged query (a query the run misses scores 0).

    >>> qrels = Qrels({"q": {"a": 1, "c": 1}})
    >>> run = Run({"q": [("a", 3.0), ("b", 2.0), ("c", 1.0)]})
    >>> m = compute_metrics(qrels, run, k_values=[1, 3])
    >>> m.aggregate["recall@1"], round(m.aggregate["precision@3"], 4), m.aggregate["mrr@3"]
    (0.5, 0.6667, 1.0)
    """
    pytrec_eval = require("pytrec_eval", extra="eval", purpose="Computing retrieval metrics")
    k_values = sorted({int(k) for k in k_values})
    if not k_values or k_values[0] < 1:
        raise ConfigError(f"k values must be positive integers, got {k_values}")
    unknown = set(families) - set(METRIC_FAMILIES)
    if unknown:
        raise ConfigError(f"unknown metric families {sorted(unknown)}; choose from {', '.join(METRIC_FAMILIES)}")
    # negative grades (TREC's -2 for spam) mean non-relevant, as in trec_eval; pytrec_eval crashes on them
    judged = {qid: {doc: max(grade, 0) for doc, grade in docs.items()} for qid, docs in qrels.to_dict().items()}
    scores = run.to_dict()
    results: dict[str, dict[str, float]] = {qid: {} for qid in judged}
    trec = [f"{_TREC_MEASURE[f]}.{','.join(map(str, k_values))}" for f in families if f in _TREC_MEASURE]
    if trec:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, set(trec))
        evaluated = evaluator.evaluate({qid: scores.get(qid, {}) for qid in judged})
        for qid, measures in evaluated.items():
            for family in families:
                if family in _TREC_MEASURE:
                    for k in k_values:
                        results[qid][f"{family}@{k}"] = measures[f"{_TREC_MEASURE[family]}_{k}"]
    if "mrr" in families:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
        for k in k_values:
            top = {qid: dict(sorted(scores.get(qid, {}).items(), key=lambda item: -item[1])[:k]) for qid in judged}
            for qid, measures in evaluator.evaluate(top).items():
                results[qid][f"mrr@{k}"] = measures["recip_rank"]
    for qid in results:  # pytrec_eval leaves out queries with an empty ranking: they score 0
        for family in families:
            for k in k_values:
                results[qid].setdefault(f"{family}@{k}", 0.0)
    names = [f"{family}@{k}" for family in families for k in k_values]
    aggregate = {name: float(np.mean([results[qid][name] for qid in results])) if results else 0.0 for name in names}
    return MetricsResult(aggregate, results)
