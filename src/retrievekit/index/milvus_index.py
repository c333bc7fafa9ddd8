"""Milvus as an index backend, through ``pymilvus``: a URI that is a local ``*.db`` path runs Milvus
Lite (embedded, no server), an ``http://host:19530`` URI a Milvus server or cluster; the code path
is the same. Needs ``retrievekit[milvus]``.

Two index types, one collection layout: ``milvus`` stores dense vectors (FLOAT_VECTOR) and
``milvus-sparse`` learned sparse ones (SPLADE: SPARSE_FLOAT_VECTOR, an inverted index searched by
exact inner product), each beside an ``id`` (VARCHAR primary key). The manifest is stored in the
collection's properties (key ``retrievekit.manifest``) with a content token that every ``add`` and
``remove`` renews. Dense ``ann`` maps to Milvus's index types: ``flat`` -> FLAT (exact), ``hnsw`` ->
HNSW (``ef`` at search), ``ivf_flat`` / ``ivf_pq`` -> IVF_FLAT / IVF_PQ (``partitions`` cells,
default 128, ``nprobes`` searched). Multi-vector (ColBERT) models have no Milvus index type here.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ConfigError
from retrievekit.index.base import missing_ids_error
from retrievekit.index.database import DatabaseIndex, parse_json_metadata
from retrievekit.index.sparse import SparseVectorIndex
from retrievekit.index.vector import VectorIndex
from retrievekit.outputs import SparseVectors

__all__ = ["MilvusIndex", "MilvusSparseIndex"]

_MANIFEST_KEY = "retrievekit.manifest"
_CONTENT_KEY = "retrievekit.content"
_MILVUS_ANN = {"flat": "FLAT", "hnsw": "HNSW", "ivf_flat": "IVF_FLAT", "ivf_pq": "IVF_PQ"}
_MAX_ID_LENGTH = 512
_INSERT_ROWS = 5000
# Milvus fixes the IVF cells when the collection is made, before its size is known: a default for
# collections up to about a million vectors (4 sqrt(n) is the usual rule; set ``partitions`` above that)
_DEFAULT_NLIST = 128


def _pymilvus() -> Any:
    # Milvus Lite's in-process gRPC server lacks AllocTimestamp; pymilvus asks, gets "not
    # implemented" and carries on, but gRPC logs the refusal as an ERROR with a traceback
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    return require("pymilvus", extra="milvus", purpose="the Milvus index")


class _MilvusCollection(DatabaseIndex):
    """The collection, its metadata, ids and writes: everything but the vector field's type."""

    backend = "Milvus"
    extra = "milvus"
    _field = "vector"

    # ---- the family's part ----------------------------------------------------------------------
    def _add_field(self, schema: Any, types: Any) -> None:
        raise NotImplementedError

    def _field_index(self) -> tuple[str, str, dict[str, Any]]:
        """(index type, metric type, build parameters) of the vector field."""
        raise NotImplementedError

    def _values(self, items: Any) -> list[Any]:
        """Items as the values Milvus takes for the field (lists of floats, {term: weight} dicts)."""
        raise NotImplementedError

    def _search_params(self, k: int) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, distance: float) -> float:
        return float(distance)

    # ---- shared -----------------------------------------------------------------------------------
    @property
    def _client(self) -> Any:
        return self._handles["client"]

    def _db_open(self) -> bool:
        client = _pymilvus().MilvusClient(self.uri)
        self._handles = {"client": client}
        if not client.has_collection(self.name):
            return False
        client.load_collection(self.name)
        return True

    def close(self) -> None:
        client = self._handles.pop("client", None)
        if client is not None:
            client.close()

    def _db_create(self, manifest: dict[str, Any]) -> None:
        pymilvus = _pymilvus()
        client = self._client
        if client.has_collection(self.name):
            client.drop_collection(self.name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pymilvus.DataType.VARCHAR, is_primary=True, max_length=_MAX_ID_LENGTH)
        self._add_field(schema, pymilvus.DataType)
        params = client.prepare_index_params()
        index_type, metric_type, build = self._field_index()
        params.add_index(self._field, index_type=index_type, metric_type=metric_type, params=build)
        properties = {_MANIFEST_KEY: json.dumps(manifest), _CONTENT_KEY: uuid.uuid4().hex}
        client.create_collection(self.name, schema=schema, index_params=params, properties=properties)
        client.load_collection(self.name)

    def _properties(self) -> dict[str, Any]:
        return dict(self._client.describe_collection(self.name).get("properties") or {})

    def _db_manifest(self) -> dict[str, Any] | None:
        return parse_json_metadata(self._properties().get(_MANIFEST_KEY), f"{self.uri} (collection {self.name!r})")

    def _db_insert(self, ids: list[str], items: Any) -> None:
        long = next((i for i in ids if len(i.encode()) > _MAX_ID_LENGTH), None)
        if long is not None:
            raise ConfigError(f"id {long!r:.60} is longer than Milvus's {_MAX_ID_LENGTH}-byte primary key")
        values = self._values(items)
        for start in range(0, len(ids), _INSERT_ROWS):
            chunk = zip(ids[start : start + _INSERT_ROWS], values[start : start + _INSERT_ROWS], strict=True)
            rows = [{"id": i, self._field: v} for i, v in chunk]
            self._client.insert(self.name, rows)

    def _db_delete(self, ids: list[str]) -> None:
        self._client.delete(self.name, ids=ids)

    def _db_existing(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(ids), _INSERT_ROWS):
            rows = self._client.get(self.name, ids=ids[start : start + _INSERT_ROWS], output_fields=["id"])
            found.extend(row["id"] for row in rows)
        return found

    def _db_count(self) -> int:
        rows = self._client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _db_search(self, queries: Any, k: int) -> list[tuple[list[str], list[float]]]:
        results = self._client.search(
            self.name, data=self._values(queries), anns_field=self._field, limit=k, output_fields=["id"],
            search_params=self._search_params(k),
        )  # fmt: skip
        return [([hit["id"] for hit in row], [self._score(hit["distance"]) for hit in row]) for row in results]

    def _db_flush(self) -> None:
        self._client.flush(self.name)

    def _db_changed(self) -> None:
        self._client.alter_collection_properties(self.name, properties={_CONTENT_KEY: uuid.uuid4().hex})

    def _db_content_token(self) -> str:
        return str(self._properties().get(_CONTENT_KEY, ""))


class MilvusIndex(_MilvusCollection, VectorIndex):
    """Dense vectors in a Milvus collection (see the module description)."""

    index_type = "milvus"

    def _metric_type(self) -> str:
        return "L2" if self.metric == "l2" else "IP"  # cosine vectors are normalised on the way in

    def _add_field(self, schema: Any, types: Any) -> None:
        schema.add_field(self._field, types.FLOAT_VECTOR, dim=self.dimension)

    def _field_index(self) -> tuple[str, str, dict[str, Any]]:
        build: dict[str, Any] = {}
        if self.ann == "hnsw":
            build = {"M": 32, "efConstruction": 200}
        elif self.ann.startswith("ivf"):
            build = {"nlist": self.partitions or _DEFAULT_NLIST}
            if self.ann == "ivf_pq":
                build |= {"m": _pq_subquantizers(self.dimension), "nbits": 8}
        return _MILVUS_ANN[self.ann], self._metric_type(), build

    def _values(self, items: Any) -> list[Any]:
        values: list[Any] = np.asarray(items, dtype=np.float32).tolist()
        return values

    def _search_params(self, k: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.ann == "hnsw":
            params = {"ef": max(self.ef, k)}
        elif self.ann.startswith("ivf"):
            params = {"nprobe": self.nprobes}
        return {"metric_type": self._metric_type(), "params": params}

    def _score(self, distance: float) -> float:
        return -float(distance) if self.metric == "l2" else float(distance)  # Milvus's L2 is squared


class MilvusSparseIndex(_MilvusCollection, SparseVectorIndex):
    """Learned sparse vectors (SPLADE) in a Milvus collection: an inverted index, exact inner
    product (every posting list of the query's terms is read: ``drop_ratio_search`` 0)."""

    index_type = "milvus-sparse"
    _field = "sparse"

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        if self.ann != "flat":
            raise ConfigError("a milvus-sparse index is an exact inverted index: ann must be 'flat'")

    def _add_field(self, schema: Any, types: Any) -> None:
        schema.add_field(self._field, types.SPARSE_FLOAT_VECTOR)

    def _field_index(self) -> tuple[str, str, dict[str, Any]]:
        return "SPARSE_INVERTED_INDEX", "IP", {"drop_ratio_build": 0.0}

    def _values(self, items: Any) -> list[Any]:
        vectors: SparseVectors = items
        rows = []
        for row in range(len(vectors)):
            terms, weights = vectors.row(row)
            rows.append(
                dict(zip(np.asarray(terms).tolist(), np.asarray(weights, dtype=np.float32).tolist(), strict=True))
            )
        return rows

    def _search_params(self, k: int) -> dict[str, Any]:
        return {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}

    def vectors_of(self, ids: list[str]) -> SparseVectors:
        """The stored vectors of ``ids``, in that order (for ``search --explain``)."""
        rows = {
            row["id"]: row[self._field]
            for row in self._client.get(self.name, ids=ids, output_fields=["id", self._field])
        }
        missing = [i for i in ids if i not in rows]
        if missing:
            raise missing_ids_error(missing, f"this {self.index_type} index")
        parts = []
        for identifier in ids:
            weights = rows[identifier]
            terms = np.asarray(sorted(int(t) for t in weights), dtype=np.int32)
            values = np.asarray([weights[t] for t in sorted(weights, key=int)], dtype=np.float32)
            parts.append(SparseVectors(np.asarray([0, len(terms)], np.int64), terms, values, self.vocab_size))
        return SparseVectors.concatenate(parts) if parts else SparseVectors.empty(self.vocab_size)


def _pq_subquantizers(dimension: int) -> int:
    """The largest of 48, 32, 16, 8, 4, 2, 1 that divides ``dimension`` (PQ needs a divisor)."""
    return next(m for m in (48, 32, 16, 8, 4, 2, 1) if dimension % m == 0)
