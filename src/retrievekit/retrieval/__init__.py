"""Retrieval: retrievers (dense, BM25, hybrid) and fusion of ranked lists."""

from retrievekit.retrieval.fusion import FUSIONS, fuse, reciprocal_rank_fusion, weighted_score_fusion
from retrievekit.retrieval.retriever import Bm25Retriever, DenseRetriever, HybridRetriever, Retriever, run_from_hits

__all__ = [
    "FUSIONS",
    "Bm25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "fuse",
    "reciprocal_rank_fusion",
    "run_from_hits",
    "weighted_score_fusion",
]
