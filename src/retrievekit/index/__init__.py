"""Indexes behind one interface: exact (the reference), FAISS HNSW and IVF-PQ, BM25 on bm25s."""

from retrievekit.index.base import INDEX_KIND, METRICS, Hits, IdTable, Index, index_class, load_index
from retrievekit.index.exact import ExactIndex, top_k
from retrievekit.index.vector import VectorIndex

__all__ = [
    "INDEX_KIND",
    "METRICS",
    "ExactIndex",
    "Hits",
    "IdTable",
    "Index",
    "VectorIndex",
    "index_class",
    "load_index",
    "top_k",
]
