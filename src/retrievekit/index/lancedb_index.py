"""LanceDB as a dense index backend: embedded, a local folder, no server; the choice for a
collection larger than RAM on one machine (Lance files are read from disk, not loaded). Needs
``retrievekit[lancedb]``.

The table holds ``id`` (string) and ``vector`` (fixed-size float32 list); the manifest is the
table's schema metadata (key ``retrievekit``). ``ann="flat"`` searches every vector (exact);
``ivf_pq`` / ``hnsw`` (LanceDB's IVF_HNSW_SQ) / ``ivf_flat`` build LanceDB's index on ``save``,
searched with ``nprobes`` cells and, for HNSW, ``ef``; IVF-PQ and HNSW (which score quantised
codes) rescore their best ``refine_factor * k`` candidates exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.index.base import check_count
from retrievekit.index.database import DatabaseIndex, parse_json_metadata, sql_string
from retrievekit.index.vector import VectorIndex

__all__ = ["LanceDbIndex"]

_METADATA_KEY = b"retrievekit"
_LANCE_ANN = {"ivf_pq": "IVF_PQ", "hnsw": "IVF_HNSW_SQ", "ivf_flat": "IVF_FLAT"}
_ID_CHUNK = 1000


def _lancedb() -> Any:
    for variable in ("LANCE_LOG", "LANCEDB_LOG"):  # the Rust logs otherwise warn on every new table
        os.environ.setdefault(variable, "error")
    return require("lancedb", extra="lancedb", purpose="the LanceDB index")


class LanceDbIndex(DatabaseIndex, VectorIndex):
    """Dense vectors in a LanceDB table (see the module description)."""

    index_type = "lancedb"
    backend = "LanceDB"
    extra = "lancedb"

    def __init__(self, dimension: int, metric: str = "dot", *, refine_factor: int | None = 4, **kwargs: Any) -> None:
        super().__init__(dimension, metric, **kwargs)
        self.refine_factor = None if refine_factor is None else check_count("refine_factor", refine_factor)

    def config(self) -> dict[str, Any]:
        return super().config() | {"refine_factor": self.refine_factor}

    @property
    def _table(self) -> Any:
        return self._handles["table"]

    def _schema(self, manifest: dict[str, Any]) -> Any:
        import pyarrow as pa

        fields = [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), self.dimension)),
        ]
        return pa.schema(fields, metadata={_METADATA_KEY: json.dumps(manifest).encode()})

    def _db_open(self) -> bool:
        database = _lancedb().connect(self.uri)
        self._handles = {"db": database}
        if self.name not in database.list_tables().tables:
            return False
        self._handles["table"] = database.open_table(self.name)
        return True

    def _db_create(self, manifest: dict[str, Any]) -> None:
        database = self._handles["db"]
        self._handles["table"] = database.create_table(self.name, schema=self._schema(manifest), mode="overwrite")

    def _db_manifest(self) -> dict[str, Any] | None:
        metadata = self._table.schema.metadata or {}
        return parse_json_metadata(metadata.get(_METADATA_KEY), f"{self.uri} (table {self.name!r})")

    def _db_insert(self, ids: list[str], vectors: np.ndarray) -> None:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        column = pa.FixedSizeListArray.from_arrays(flat, self.dimension)
        self._table.add(pa.table({"id": pa.array(ids, pa.string()), "vector": column}))

    def _id_filter(self, ids: list[str]) -> str:
        return "id IN (" + ", ".join(sql_string(i) for i in ids) + ")"

    def _db_delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), _ID_CHUNK):
            self._table.delete(self._id_filter(ids[start : start + _ID_CHUNK]))

    def _db_existing(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            rows = self._table.search().where(self._id_filter(chunk)).select(["id"]).limit(len(chunk)).to_arrow()
            found.extend(rows["id"].to_pylist())
        return found

    def _db_count(self) -> int:
        return int(self._table.count_rows())

    def _db_search(self, queries: np.ndarray, k: int) -> list[tuple[list[str], list[float]]]:
        distance = "l2" if self.metric == "l2" else "dot"
        query = self._table.search(list(queries), vector_column_name="vector").distance_type(distance).limit(k)
        query = query.select(["id", "_distance"])
        if self.ann != "flat":
            query = query.nprobes(self.nprobes)
            if self.ann == "hnsw":
                query = query.ef(self.ef)
            if self.ann in ("ivf_pq", "hnsw") and self.refine_factor:  # both score quantised codes
                query = query.refine_factor(self.refine_factor)
        table = query.to_arrow()
        rows: list[tuple[list[str], list[float]]] = [([], []) for _ in range(len(queries))]
        positions = table["query_index"].to_numpy() if len(queries) > 1 else np.zeros(table.num_rows, np.int64)
        distances = table["_distance"].to_numpy().astype(np.float64)
        # LanceDB's "dot" distance is 1 - q.d and its "l2" the squared distance: back to scores
        scores = -distances if self.metric == "l2" else 1.0 - distances
        for position, identifier, score in zip(
            positions.tolist(), table["id"].to_pylist(), scores.tolist(), strict=True
        ):
            rows[position][0].append(identifier)
            rows[position][1].append(score)
        for ids, values in rows:  # LanceDB returns each query's rows best first; keep it certain
            order = np.argsort(-np.asarray(values), kind="stable")
            ids[:] = [ids[i] for i in order]
            values[:] = [values[i] for i in order]
        return rows

    def _db_flush(self) -> None:
        if self.ann == "flat" or self._db_count() < 2:
            return
        if not self._ann_is_current():
            distance = "l2" if self.metric == "l2" else "dot"
            options: dict[str, Any] = {"metric": distance, "vector_column_name": "vector", "replace": True}
            options["index_type"] = _LANCE_ANN[self.ann]
            if self.partitions is not None:
                options["num_partitions"] = min(self.partitions, self._db_count())
            self._table.create_index(**options)

    def _ann_is_current(self) -> bool:
        for index in self._table.list_indices():
            if "vector" in index.columns:
                stats = self._table.index_stats(index.name)
                return stats is not None and stats.num_unindexed_rows == 0
        return False

    def _db_content_token(self) -> str:
        return str(self._table.version)
