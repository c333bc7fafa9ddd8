"""Vector indexes whose items live in a database (LanceDB, Milvus): the half they share.

A database index honours the same contract as every index (``add``, ``remove``, ``search``,
``len``, ``save``, ``load``), with two differences the database dictates: ``save`` *flushes* (the
items are already stored at the index's URI, so there is nothing to copy) and ``load`` *connects*
(:func:`~retrievekit.index.base.load_index` recognises a LanceDB folder, a Milvus Lite ``.db``
path or a Milvus ``http://`` URI). The manifest every saved index carries (index type, config,
model name and fingerprint, loading options) is stored in the database's own metadata (LanceDB:
the table's schema metadata; Milvus: the collection's properties), so ``load`` checks it as it
checks a folder's ``manifest.json``: an index built with another model is refused at search time.

The database keeps the ids (a string primary key) and tells how many items it holds. The content
fingerprint (what caches of evaluation runs are keyed on) is the manifest plus a content token the
database changes on every write (LanceDB: the table version; Milvus: a token this class stores on
every ``add`` and ``remove``).

A backend implements the ``_db_*`` methods; nothing else in the package knows which database it is.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrievekit.artifacts import Manifest, fingerprint_json, manifest_from_dict
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.hits import Hits
from retrievekit.index.base import INDEX_KIND, Index, check_count, check_new_ids, ids_and_items, missing_ids_error
from retrievekit.index.registry import index_class

__all__ = ["ANN_TYPES", "DatabaseIndex", "database_index_type"]

# the approximate index a database builds over its vectors: flat is exact (every vector scored)
ANN_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_pq")
_REMOTE = re.compile(r"^(https?|tcp|grpc|unix)://")


def database_index_type(location: str | Path) -> str | None:
    """``"milvus"`` for a Milvus URI (``http(s)://...``) or a Milvus Lite path (``*.db``),
    ``"lancedb"`` for a LanceDB folder (one holding ``*.lance`` tables and no ``manifest.json``),
    else ``None`` (a folder saved by retrievekit, or nothing).

    >>> database_index_type("http://localhost:19530"), database_index_type("runs/scifact.db")
    ('milvus', 'milvus')
    """
    text = str(location)
    path = Path(text)
    if (path / "manifest.json").exists():  # a folder saved by retrievekit, whatever its name
        return None
    if _REMOTE.match(text) or path.suffix == ".db":
        return "milvus"
    if path.is_dir() and any(path.glob("*.lance")):
        return "lancedb"
    return None


class DatabaseIndex(Index[Any, Any]):
    """An index stored in a database at ``uri``, in the table (collection) ``name``. A concrete
    class also derives from its family's contract (:class:`~retrievekit.index.vector.VectorIndex`,
    :class:`~retrievekit.index.sparse.SparseVectorIndex`), which checks items and queries
    (``_prepare``) and holds the dimension.

    ``ann`` is the database's search structure: ``flat`` (exact: every vector scored, the setting
    whose results equal the flat index), ``hnsw``, ``ivf_flat`` or ``ivf_pq``; ``partitions`` (IVF
    cells), ``nprobes`` (cells visited per query) and ``ef`` (HNSW candidate list) tune it.
    ``overwrite``: the first ``add`` replaces a table of the same name already at ``uri`` (without
    it, that is an error: load the index to add to it).
    """

    backend: ClassVar[str]
    extra: ClassVar[str]
    _prepare: Callable[[Any, str], Any]  # from the family's contract class

    def __init__(
        self,
        *family_args: Any,
        uri: str | Path,
        name: str = "retrievekit",
        ann: str = "flat",
        partitions: int | None = None,
        nprobes: int = 16,
        ef: int = 128,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*family_args, **kwargs)
        if ann not in ANN_TYPES:
            raise ConfigError(f"ann must be one of {', '.join(ANN_TYPES)}, got {ann!r}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
            raise ConfigError(f"a table name is letters, digits and underscores, got {name!r}")
        self.uri = str(uri)
        self.name = name
        self.ann = ann
        self.partitions = None if partitions is None else check_count("partitions", partitions)
        self.nprobes = check_count("nprobes", nprobes)
        self.ef = check_count("ef", ef)
        self.overwrite = overwrite
        self._exists = False  # whether this object has created or connected to its table
        self._handles: dict[str, Any] = {}  # the backend's connection objects

    # ---- the backend's part -------------------------------------------------------------------
    @abstractmethod
    def _db_open(self) -> bool:
        """Connect to ``uri``; open the table when it is there. Return whether it is."""

    @abstractmethod
    def _db_create(self, manifest: dict[str, Any]) -> None:
        """Create the table (dropping one of the same name), storing ``manifest`` in its metadata."""

    @abstractmethod
    def _db_manifest(self) -> dict[str, Any] | None:
        """The manifest stored in the open table's metadata (None when there is none)."""

    @abstractmethod
    def _db_insert(self, ids: list[str], items: Any) -> None: ...

    @abstractmethod
    def _db_delete(self, ids: list[str]) -> None: ...

    @abstractmethod
    def _db_existing(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` the table holds."""

    @abstractmethod
    def _db_count(self) -> int: ...

    @abstractmethod
    def _db_search(self, queries: Any, k: int) -> list[tuple[list[str], list[float]]]:
        """Per query, at most ``k`` (ids, scores), best first; scores higher-is-better in this
        package's convention (dot, cosine, negated squared l2)."""

    @abstractmethod
    def _db_flush(self) -> None:
        """Make every write durable and build (or refresh) the ``ann`` structure."""

    @abstractmethod
    def _db_content_token(self) -> str:
        """Changes whenever the stored items change."""

    def _db_changed(self) -> None:
        """Called after every add and remove (a backend without versions records a new token)."""

    def close(self) -> None:
        """Release the connection (a Milvus Lite file is held by one process at a time)."""

    # ---- the contract, once for every database ------------------------------------------------
    def config(self) -> dict[str, Any]:
        return super().config() | {  # type: ignore[safe-super]  # the family contract is next in the MRO
            "name": self.name, "ann": self.ann, "partitions": self.partitions, "nprobes": self.nprobes,
            "ef": self.ef,
        }  # fmt: skip

    def _manifest(self) -> dict[str, Any]:
        config = self.config() | {
            "index_type": self.index_type,
            "model": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "model_options": self.model_options,
        }
        return Manifest(
            kind=INDEX_KIND, family=self.family, config=config, fingerprint=fingerprint_json(config)
        ).to_dict()

    def _ensure_table(self) -> None:
        if self._exists:
            return
        if self._db_open() and not self.overwrite:
            raise ConfigError(
                f"{self.uri} already holds a table {self.name!r}; load it (retrievekit.load_index) to add to it, "
                "or pass overwrite=True to replace it"
            )
        self._db_create(self._manifest())
        self._exists = True

    def __len__(self) -> int:
        return self._db_count() if self._exists else 0

    def add(self, ids: Sequence[str], items: Any, *, upsert: bool = False) -> None:
        """Store ``items`` under ``ids``; an id already in the database is an error unless ``upsert``."""
        ids, vectors = ids_and_items(ids, items, self._prepare)
        if not ids:
            return
        with self.lock.writing():
            existing = self._db_existing(ids) if self._exists and self._db_count() else []
            check_new_ids(ids, existing, upsert=upsert)  # before a table is made for them
            self._ensure_table()
            if existing:
                self._db_delete(existing)
            self._db_insert(ids, vectors)
            self._db_changed()

    def remove(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self.lock.writing():
            existing = self._db_existing(ids) if self._exists else []
            held = set(existing)
            if not missing_ok and (missing := [i for i in ids if i not in held]):
                raise missing_ids_error(missing, f"this {self.index_type} index")
            if existing:
                self._db_delete(existing)
                self._db_changed()
            return len(existing)

    def search(self, queries: Any, k: int = 10) -> list[Hits]:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        prepared = self._prepare(queries, "queries")
        with self.lock.reading():
            if not self._exists or self._db_count() == 0:
                return [Hits.empty() for _ in range(len(prepared))]
            rows = self._db_search(prepared, k)
        return [Hits(ids, np.asarray(scores, dtype=np.float32)) for ids, scores in rows]

    def fingerprint(self) -> str:
        return fingerprint_json({
            "manifest": self._manifest()["config"], "count": len(self),
            "content": self._db_content_token() if self._exists else "",
        })  # fmt: skip

    def save(self, directory: str | Path | None = None, *, overwrite: bool = True) -> Path:
        """Flush: the items are already at :attr:`uri`; make them durable and build the ``ann``
        structure. ``directory``, when given, must be the index's URI."""
        if directory is not None and not _same_location(directory, self.uri):
            raise ConfigError(
                f"a {self.index_type} index lives in its database at {self.uri}; save() flushes it there "
                f"and cannot write it to {directory}"
            )
        with self.lock.writing():
            self._ensure_table()
            self._db_flush()
        return Path(self.uri)

    @classmethod
    def connect(cls, uri: str | Path, *, name: str = "retrievekit") -> DatabaseIndex:
        """The index stored at ``uri``, checked against the manifest in the database's metadata."""
        text = str(uri)
        if not _REMOTE.match(text) and not Path(text).exists():
            raise ArtifactError(f"{text}: no {cls.backend} database there (was it moved or removed?)")
        probe = cls.__new__(cls)
        probe.uri, probe.name = text, name
        try:
            index = cls._checked(probe, text, name)
        except Exception:
            probe.close()
            raise
        index._handles = probe._handles  # the probe's open connection
        index._exists = True
        return index

    @classmethod
    def _checked(cls, probe: DatabaseIndex, text: str, name: str) -> DatabaseIndex:
        """A new index of the stored type and config, once the table and its manifest check out."""
        if not probe._db_open():
            raise ArtifactError(f"{text}: the {cls.backend} database has no table {name!r}")
        raw = probe._db_manifest()
        if raw is None:
            raise ArtifactError(
                f"{text}: table {name!r} carries no retrievekit manifest; it was not built by retrievekit"
            )
        where = f"{text} (table {name!r} metadata)"
        manifest = manifest_from_dict(raw, where)
        config = dict(manifest.config)
        stored_type = config.pop("index_type", None)
        target: Any = _registered(stored_type)
        if manifest.kind != INDEX_KIND or getattr(target, "backend", None) != cls.backend:
            raise ArtifactError(f"{where}: not a {cls.backend} index of retrievekit's (index type {stored_type!r})")
        model, fingerprint = config.pop("model", None), config.pop("model_fingerprint", None)
        options = config.pop("model_options", {})
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ArtifactError(f"{where}: model_fingerprint must be a string")
        try:
            index: DatabaseIndex = target(**config, uri=text)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: invalid index config: {exc}") from None
        index.model_name, index.model_fingerprint, index.model_options = model, fingerprint, dict(options or {})
        return index

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> DatabaseIndex:
        raise ConfigError(f"a {cls.index_type} index is loaded by connecting to its URI")

    # folder-index hooks that a database index has no use for
    def _payload_digest(self) -> str:
        return self._db_content_token()

    def _save_payload(self, directory: Path) -> None:  # pragma: no cover - save() is overridden
        raise ConfigError("a database index is flushed, not written to a folder")

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:  # pragma: no cover
        raise ConfigError("a database index is connected to, not read from a folder")


def _registered(index_type: Any) -> Any:
    """The class registered for a stored index type, or None."""
    try:
        return index_class(str(index_type))
    except ValueError:
        return None


def _same_location(a: str | Path, b: str | Path) -> bool:
    if _REMOTE.match(str(a)) or _REMOTE.match(str(b)):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def sql_string(value: str) -> str:
    """``value`` as a single-quoted SQL / Milvus filter literal.

    >>> sql_string("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"


def parse_json_metadata(text: str | bytes | None, where: str) -> dict[str, Any] | None:
    """A manifest stored as JSON text in a database's metadata (None when absent)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where}: the stored manifest is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{where}: the stored manifest is not a JSON object")
    return value
