"""Fusing ranked lists from several retrievers: reciprocal rank fusion and weighted score fusion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.hits import Hits

__all__ = ["FUSIONS", "check_rerank_fusion", "fuse", "reciprocal_rank_fusion", "weighted_score_fusion"]

FUSIONS = ("rrf", "weighted")


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} weights for {n} result lists")
    return [float(w) for w in weights]


def _ranked(scores: dict[str, float], k: int) -> Hits:
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return Hits([doc for doc, _ in ordered], np.asarray([s for _, s in ordered], dtype=np.float32))


def reciprocal_rank_fusion(
    lists: Sequence[Hits], *, k: int, rrf_k: int = 60, weights: Sequence[float] | None = None
) -> Hits:
    """``score(d) = sum_i w_i / (rrf_k + rank_i(d))``, ranks from 1 (Cormack et al., 2009).

    >>> a = Hits(["x", "y"], np.array([9.0, 1.0])); b = Hits(["y", "z"], np.array([0.5, 0.4]))
    >>> fused = reciprocal_rank_fusion([a, b], k=3, rrf_k=60)
    >>> fused.ids, [round(float(s), 5) for s in fused.scores]
    (['y', 'x', 'z'], [0.03252, 0.01639, 0.01613])
    """
    fused: dict[str, float] = {}
    for weight, hits in zip(_weights(weights, len(lists)), lists, strict=True):
        for rank, doc in enumerate(hits.ids, start=1):
            fused[doc] = fused.get(doc, 0.0) + weight / (rrf_k + rank)
    return _ranked(fused, k)


def weighted_score_fusion(lists: Sequence[Hits], *, k: int, weights: Sequence[float] | None = None) -> Hits:
    """Min-max normalise each list's scores per query to [0, 1], then sum with weights; a document
    missing from a list gets 0 from it.

    >>> a = Hits(["x", "y"], np.array([10.0, 0.0])); b = Hits(["y", "x"], np.array([0.9, 0.7]))
    >>> fused = weighted_score_fusion([a, b], k=2, weights=[0.5, 0.5])
    >>> fused.ids, fused.scores.tolist()
    (['x', 'y'], [0.5, 0.5])
    """
    fused: dict[str, float] = {}
    for weight, hits in zip(_weights(weights, len(lists)), lists, strict=True):
        if not len(hits):
            continue
        scores = np.asarray(hits.scores, dtype=np.float64)
        span = scores.max() - scores.min()
        normalised = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
        for doc, value in zip(hits.ids, normalised, strict=True):
            fused[doc] = fused.get(doc, 0.0) + weight * float(value)
    return _ranked(fused, k)


def fuse(
    lists: Sequence[Hits], *, method: str, k: int, weights: Sequence[float] | None = None, rrf_k: int = 60
) -> Hits:
    if method == "rrf":
        return reciprocal_rank_fusion(lists, k=k, rrf_k=rrf_k, weights=weights)
    if method == "weighted":
        return weighted_score_fusion(lists, k=k, weights=weights)
    raise ConfigError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")


def check_rerank_fusion(
    fusion: str | None, weights: Sequence[float] | None, *, has_reranker: bool
) -> list[float] | None:
    """Refuses second-stage fusion settings that cannot work (an unknown method, fusion without a
    reranker, weights without a fusion or not two of them: first stage, reranker); the weights as floats."""
    if fusion is not None and fusion not in FUSIONS:
        raise ConfigError(f"unknown rerank fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if (fusion is not None or weights is not None) and not has_reranker:
        raise ConfigError("rerank_fusion needs a reranker: it fuses the reranker's order with the first stage's")
    if weights is None:
        return None
    if fusion is None:
        raise ConfigError("rerank_weights weigh a rerank_fusion (rrf or weighted): give one")
    if len(weights) != 2:
        raise ConfigError(f"rerank_weights are (first stage, reranker): 2 weights, got {len(weights)}")
    return [float(w) for w in weights]
