"""Index types by name. Each entry names its family and where its class lives (imported only when
used, so listing the types imports no backend). A new index type is one :func:`register_index_type`
call; nothing else in the package changes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrievekit.errors import ConfigError

if TYPE_CHECKING:
    from retrievekit.index.base import Index

__all__ = ["FAMILIES", "IndexType", "index_class", "index_type_info", "index_types", "register_index_type"]

FAMILIES = ("dense", "lexical", "multivector", "sparse")


@dataclass(frozen=True)
class IndexType:
    """A registered index type: its name, the family of items it stores, and ``module:Class``."""

    name: str
    family: str
    target: str
    description: str = ""


_REGISTRY: dict[str, IndexType] = {}


def register_index_type(name: str, target: str, *, family: str, description: str = "") -> IndexType:
    """Register (or replace) the index type ``name`` implemented by ``target`` (``"module:Class"``).

    >>> register_index_type("my-flat", "retrievekit.index.exact:ExactIndex", family="dense").family
    'dense'
    >>> index_class("my-flat").__name__
    'ExactIndex'
    >>> unregister_index_type("my-flat")
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown index family {family!r}; choose one of {', '.join(FAMILIES)}")
    if ":" not in target:
        raise ConfigError(f"index target must be 'module:Class', got {target!r}")
    entry = IndexType(name, family, target, description)
    _REGISTRY[name] = entry
    return entry


def unregister_index_type(name: str) -> None:
    _REGISTRY.pop(name, None)


def index_types(family: str | None = None) -> list[str]:
    """Registered type names, of one family when given.

    >>> index_types("dense"), index_types("lexical")
    (['flat', 'hnsw', 'ivfpq', 'scann', 'lancedb', 'milvus'], ['bm25'])
    """
    return [name for name, entry in _REGISTRY.items() if family is None or entry.family == family]


def index_type_info(name: str) -> IndexType:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown index type {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def index_class(name: str) -> type[Index]:
    """The class registered for ``name``."""
    module, attribute = index_type_info(name).target.split(":")
    cls: type[Index] = getattr(importlib.import_module(module), attribute)
    return cls


register_index_type("flat", "retrievekit.index.exact:ExactIndex", family="dense", description="exact, chunked")
register_index_type("hnsw", "retrievekit.index.faiss_index:HnswIndex", family="dense", description="FAISS HNSW")
register_index_type("ivfpq", "retrievekit.index.faiss_index:IvfPqIndex", family="dense", description="FAISS IVF-PQ")
register_index_type("scann", "retrievekit.index.scann_index:ScannIndex", family="dense", description="ScaNN (BET's)")
register_index_type(
    "lancedb", "retrievekit.index.lancedb_index:LanceDbIndex", family="dense", description="LanceDB (embedded, on disk)"
)
register_index_type(
    "milvus", "retrievekit.index.milvus_index:MilvusIndex", family="dense", description="Milvus (Lite file or server)"
)
register_index_type(
    "milvus-sparse",
    "retrievekit.index.milvus_index:MilvusSparseIndex",
    family="sparse",
    description="Milvus's sparse field (SPLADE)",
)
register_index_type("bm25", "retrievekit.index.bm25:Bm25Index", family="lexical", description="bm25s")
register_index_type(
    "multivector-flat",
    "retrievekit.index.multivector:MultiVectorFlatIndex",
    family="multivector",
    description="exact MaxSim, chunked",
)
register_index_type(
    "plaid", "retrievekit.index.plaid:PlaidIndex", family="multivector", description="PLAID, compressed, staged"
)
register_index_type(
    "sparse", "retrievekit.index.sparse:SparseIndex", family="sparse", description="inverted index, exact sparse dot"
)
