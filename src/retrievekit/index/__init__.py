"""Indexes behind one contract (:class:`Index`: add, remove, search, len, save, load), a registry of
index types by family, and the exact index of each family as the oracle for its approximate ones."""

from retrievekit.hits import Hits
from retrievekit.index.base import INDEX_KIND, METRICS, IdTable, Index, load_index
from retrievekit.index.exact import ExactIndex, top_k
from retrievekit.index.multivector import MultiVectorFlatIndex, MultiVectorIndex
from retrievekit.index.plaid import PlaidIndex
from retrievekit.index.registry import IndexType, index_class, index_type_info, index_types, register_index_type
from retrievekit.index.sparse import SparseIndex
from retrievekit.index.vector import VectorIndex

__all__ = [
    "INDEX_KIND",
    "METRICS",
    "ExactIndex",
    "Hits",
    "IdTable",
    "Index",
    "IndexType",
    "MultiVectorFlatIndex",
    "MultiVectorIndex",
    "PlaidIndex",
    "SparseIndex",
    "VectorIndex",
    "index_class",
    "index_type_info",
    "index_types",
    "load_index",
    "register_index_type",
    "top_k",
]
