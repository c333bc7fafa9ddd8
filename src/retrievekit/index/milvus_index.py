"""Milvus as a dense index backend, through ``pymilvus``: a URI that is a local ``*.db`` path runs
Milvus Lite (embedded, no server), an ``http://host:19530`` URI a Milvus server or cluster; the code
path is the same. Needs ``retrievekit[milvus]``.

The collection holds ``id`` (VARCHAR primary key) and ``vector`` (FLOAT_VECTOR); the manifest is
stored in the collection's properties (key ``retrievekit.manifest``) with a content token that
every ``add`` and ``remove`` renews. ``ann`` maps to Milvus's index types: ``flat`` -> FLAT (exact),
``hnsw`` -> HNSW (``ef`` at search), ``ivf_flat`` / ``ivf_pq`` -> IVF_FLAT / IVF_PQ (``partitions``
cells, default 128, ``nprobes`` searched).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ConfigError
from retrievekit.index.database import DatabaseIndex, parse_json_metadata

__all__ = ["MilvusIndex"]

_MANIFEST_KEY = "retrievekit.manifest"
_CONTENT_KEY = "retrievekit.content"
_MILVUS_ANN = {"flat": "FLAT", "hnsw": "HNSW", "ivf_flat": "IVF_FLAT", "ivf_pq": "IVF_PQ"}
_MAX_ID_LENGTH = 512
_INSERT_ROWS = 5000
# Milvus fixes the IVF cells when the collection is made, before its size is known: a default for
# collections up to about a million vectors (4 sqrt(n) is the usual rule; set ``partitions`` above that)
_DEFAULT_NLIST = 128


def _pymilvus() -> Any:
    return require("pymilvus", extra="milvus", purpose="the Milvus index")


class MilvusIndex(DatabaseIndex):
    """Dense vectors in a Milvus collection (see the module description)."""

    index_type = "milvus"
    backend = "Milvus"
    extra = "milvus"

    def __init__(self, dimension: int, metric: str = "dot", **kwargs: Any) -> None:
        super().__init__(dimension, metric, **kwargs)

    @property
    def _client(self) -> Any:
        return self._handles["client"]

    def _metric_type(self) -> str:
        return "L2" if self.metric == "l2" else "IP"  # cosine vectors are normalised on the way in

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
        import json

        pymilvus = _pymilvus()
        client = self._client
        if client.has_collection(self.name):
            client.drop_collection(self.name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pymilvus.DataType.VARCHAR, is_primary=True, max_length=_MAX_ID_LENGTH)
        schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=self.dimension)
        params = client.prepare_index_params()
        build: dict[str, Any] = {}
        if self.ann == "hnsw":
            build = {"M": 32, "efConstruction": 200}
        elif self.ann.startswith("ivf"):
            build = {"nlist": self.partitions or _DEFAULT_NLIST}
            if self.ann == "ivf_pq":
                build |= {"m": _pq_subquantizers(self.dimension), "nbits": 8}
        params.add_index("vector", index_type=_MILVUS_ANN[self.ann], metric_type=self._metric_type(), params=build)
        properties = {_MANIFEST_KEY: json.dumps(manifest), _CONTENT_KEY: uuid.uuid4().hex}
        client.create_collection(self.name, schema=schema, index_params=params, properties=properties)
        client.load_collection(self.name)

    def _properties(self) -> dict[str, Any]:
        return dict(self._client.describe_collection(self.name).get("properties") or {})

    def _db_manifest(self) -> dict[str, Any] | None:
        return parse_json_metadata(self._properties().get(_MANIFEST_KEY), f"{self.uri} (collection {self.name!r})")

    def _db_insert(self, ids: list[str], vectors: np.ndarray) -> None:
        long = next((i for i in ids if len(i.encode()) > _MAX_ID_LENGTH), None)
        if long is not None:
            raise ConfigError(f"id {long!r:.60} is longer than Milvus's {_MAX_ID_LENGTH}-byte primary key")
        for start in range(0, len(ids), _INSERT_ROWS):
            rows = [
                {"id": i, "vector": v}
                for i, v in zip(
                    ids[start : start + _INSERT_ROWS], vectors[start : start + _INSERT_ROWS].tolist(), strict=True
                )
            ]
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

    def _db_search(self, queries: np.ndarray, k: int) -> list[tuple[list[str], list[float]]]:
        params: dict[str, Any] = {}
        if self.ann == "hnsw":
            params = {"ef": max(self.ef, k)}
        elif self.ann.startswith("ivf"):
            params = {"nprobe": self.nprobes}
        results = self._client.search(
            self.name, data=queries.tolist(), anns_field="vector", limit=k, output_fields=["id"],
            search_params={"metric_type": self._metric_type(), "params": params},
        )  # fmt: skip
        sign = -1.0 if self.metric == "l2" else 1.0  # Milvus's L2 is the squared distance
        return [([hit["id"] for hit in row], [sign * float(hit["distance"]) for hit in row]) for row in results]

    def _db_flush(self) -> None:
        self._client.flush(self.name)

    def _db_changed(self) -> None:
        self._client.alter_collection_properties(self.name, properties={_CONTENT_KEY: uuid.uuid4().hex})

    def _db_content_token(self) -> str:
        return str(self._properties().get(_CONTENT_KEY, ""))


def _pq_subquantizers(dimension: int) -> int:
    """The largest of 48, 32, 16, 8, 4, 2, 1 that divides ``dimension`` (PQ needs a divisor)."""
    return next(m for m in (48, 32, 16, 8, 4, 2, 1) if dimension % m == 0)
