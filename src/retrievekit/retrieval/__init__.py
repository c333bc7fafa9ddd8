"""Retrieval: the Retriever / Reranker / Pipeline contracts, retrievers over indexes, and fusion."""

from retrievekit.retrieval.base import Pipeline, Reranker, Retriever, run_from_hits
from retrievekit.retrieval.fusion import FUSIONS, fuse, reciprocal_rank_fusion, weighted_score_fusion
from retrievekit.retrieval.m3 import M3Retriever
from retrievekit.retrieval.rerankers import CascadeReranker, CrossEncoderReranker
from retrievekit.retrieval.retriever import (
    Bm25Retriever,
    DenseReranker,
    DenseRetriever,
    HybridRetriever,
    MaxSimReranker,
    MultiVectorRetriever,
    SparseRetriever,
)

__all__ = [
    "FUSIONS",
    "Bm25Retriever",
    "CascadeReranker",
    "CrossEncoderReranker",
    "DenseReranker",
    "DenseRetriever",
    "HybridRetriever",
    "M3Retriever",
    "MaxSimReranker",
    "MultiVectorRetriever",
    "Pipeline",
    "Reranker",
    "Retriever",
    "SparseRetriever",
    "fuse",
    "reciprocal_rank_fusion",
    "run_from_hits",
    "weighted_score_fusion",
]
