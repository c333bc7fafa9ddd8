"""The index contract every family implements, id bookkeeping, and symmetric save/load.

An index stores items under string ids and answers ``search(queries, k)`` with, per query, a
:class:`~retrievekit.hits.Hits` (ids and scores, best first). ``Index[Items, Queries]`` declares the
whole contract (``add``, ``remove``, ``search``, ``len``, ``save``, ``load``); each family fixes the
two types (dense: vectors and query vectors; lexical: texts and query texts). Positions inside an
engine are integers; :class:`IdTable` maps them to ids and keeps removals as tombstones, so engines
that cannot delete (HNSW, bm25s) still honour ``remove``. ``search`` keeps no per-call state on the
index, so several threads may search one index at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from retrievekit.artifacts import (
    Manifest,
    atomic_directory,
    check_contained,
    directory_lock,
    fingerprint_json,
    read_manifest,
    write_manifest,
)
from retrievekit.data.records import id_problem
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.hits import Hits
from retrievekit.index.registry import index_class
from retrievekit.scoring import SIMILARITIES

__all__ = [
    "INDEX_KIND",
    "METRICS",
    "Hits",
    "IdTable",
    "Index",
    "PositionalIndex",
    "ReadWriteLock",
    "check_count",
    "check_new_ids",
    "ids_and_items",
    "index_class",
    "load_index",
    "missing_ids_error",
    "storage_for",
]

INDEX_KIND = "index"
METRICS = (*SIMILARITIES, "ip")  # "ip" is accepted and stored as "dot"

Items = TypeVar("Items")
Queries = TypeVar("Queries")


class IdTable:
    """String ids <-> engine positions, with tombstones for removed items."""

    def __init__(self, ids: Sequence[str] = (), deleted: np.ndarray | None = None) -> None:
        self.ids: list[str] = list(ids)
        self.alive = np.ones(len(self.ids), dtype=bool) if deleted is None else ~deleted
        self._alive_rows = self.alive  # the flags' storage, grown like an index's rows: alive is its head
        self.position: dict[str, int] = {i: p for p, i in enumerate(self.ids) if self.alive[p]}
        self._array: np.ndarray | None = None
        self.version = 0  # bumped by every change, so content fingerprints know when to recompute

    def lookup(self, positions: np.ndarray) -> list[str]:
        """The ids at ``positions`` (vectorised: one fancy-index instead of a Python loop)."""
        if self._array is None or len(self._array) != len(self.ids):
            self._array = np.array(self.ids, dtype=object)
        return self._array[positions].tolist()

    def positions_of(self, ids: Sequence[str], index_type: str) -> np.ndarray:
        """The live positions of ``ids``, in that order; unknown or removed ids are a one-line error."""
        try:
            return np.fromiter((self.position[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            raise missing_ids_error([i for i in ids if i not in self.position], f"this {index_type} index") from None

    def __len__(self) -> int:
        return len(self.position)

    @property
    def capacity(self) -> int:
        """Positions used, removed ones included."""
        return len(self.ids)

    @property
    def has_tombstones(self) -> bool:
        return len(self.position) != len(self.ids)

    def check_new(self, ids: Sequence[str], *, upsert: bool) -> None:
        """Validate ids for ``add``: non-empty strings, no repeats, and no existing id unless ``upsert``."""
        check_new_ids(ids, [i for i in ids if i in self.position], upsert=upsert)

    def append(self, ids: Sequence[str]) -> None:
        """Give ``ids`` the next positions; an id already present is tombstoned (upsert). Call this only
        once the engine holds the new items, so a failed add leaves the old ones in place."""
        self.remove([i for i in ids if i in self.position])
        start, end = len(self.ids), len(self.ids) + len(ids)
        self._alive_rows = storage_for(self._alive_rows, self.alive, end)
        self._alive_rows[start:end] = True
        self.alive = self._alive_rows[:end]
        self.ids.extend(ids)
        self.position.update({i: start + n for n, i in enumerate(ids)})
        self.version += 1

    def remove(self, ids: Iterable[str], *, missing_ok: bool = False) -> np.ndarray:
        """Tombstone ``ids``; return their positions."""
        ids = list(ids)
        if not missing_ok and (missing := [i for i in ids if i not in self.position]):
            raise missing_ids_error(missing)
        positions = [self.position.pop(value) for value in ids if value in self.position]
        positions_array = np.asarray(positions, dtype=np.int64)
        self.alive[positions_array] = False
        self.version += 1
        return positions_array

    def save(self, directory: Path) -> None:
        (directory / "ids.json").write_text(json.dumps(self.ids, ensure_ascii=False))
        np.save(directory / "deleted.npy", ~self.alive, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> IdTable:
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ArtifactError(f"{directory / 'ids.json'}: expected a list of non-empty string ids")
        deleted = np.load(directory / "deleted.npy", allow_pickle=False)
        if deleted.dtype != np.bool_ or deleted.shape != (len(ids),):
            raise ArtifactError(f"{directory}: {len(ids)} ids but tombstone flags of shape {deleted.shape}")
        alive = [i for i, gone in zip(ids, deleted.tolist(), strict=True) if not gone]
        if len(set(alive)) != len(alive):
            raise ArtifactError(f"{directory / 'ids.json'}: an id appears twice")
        return cls(ids, deleted)


def storage_for(storage: np.ndarray | None, filled: np.ndarray, needed: int, *, geometric: bool = True) -> np.ndarray:
    """Storage for ``needed`` rows whose head is ``filled``: ``storage`` itself when it has the room,
    else new storage with ``filled`` copied in, by half again when ``geometric``, so adds one after
    another copy each row O(1) times (an index's vectors, their norms, an id table's live flags).

    >>> rows = storage_for(None, np.ones(4), 5)
    >>> len(rows), storage_for(rows, rows[:5], 6) is rows, len(storage_for(None, np.ones(4), 5, geometric=False))
    (6, True, 5)
    """
    if storage is not None and len(storage) >= needed:
        return storage
    filled_rows = len(filled)
    grown = np.empty((max(needed, filled_rows + filled_rows // 2) if geometric else needed, *filled.shape[1:]),
                     dtype=filled.dtype)  # fmt: skip
    grown[:filled_rows] = filled
    return grown


def missing_ids_error(missing: Sequence[str], where: str = "the index") -> ConfigError:
    """The one error for ids an index does not hold (``missing``, in the caller's order):
    one named, several counted with the first named.

    >>> str(missing_ids_error(["a"])), str(missing_ids_error(["a", "b"], "this flat index"))
    ("id 'a' is not in the index", "2 ids are not in this flat index (first: 'a')")
    """
    if len(missing) == 1:
        return ConfigError(f"id {missing[0]!r} is not in {where}")
    return ConfigError(f"{len(missing)} ids are not in {where} (first: {missing[0]!r})")


def check_new_ids(ids: Sequence[str], existing: Sequence[str], *, upsert: bool) -> None:
    """Validate the ids of one ``add``: non-empty strings, no repeats, and none of ``existing`` (the
    ones the index already holds) unless ``upsert``."""
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = ""
        for value in ids:
            if value in seen:
                duplicate = value
                break
            seen.add(value)
        raise ConfigError(f"id {duplicate!r} appears twice in one add()")
    for value in ids:
        if not isinstance(value, str):
            raise ConfigError(f"ids must be strings, got {value!r}")
        problem = id_problem(value)
        if problem:
            raise ConfigError(f"id {value!r:.60} {problem}; ids are written to TREC runs and JSON")
    if existing and not upsert:
        raise ConfigError(
            f"{len(existing)} id(s) already in the index (first: {existing[0]!r}); pass upsert=True to replace them"
        )


def ids_and_items(ids: Sequence[str], items: Any, prepare: Callable[[Any, str], Any]) -> tuple[list[str], Any]:
    """The ids of one ``add`` as a list and its items checked by the index's ``prepare``; their
    counts must agree."""
    ids = list(ids)
    prepared = prepare(items, "items")
    if len(ids) != len(prepared):
        raise ConfigError(f"{len(ids)} ids for {len(prepared)} items")
    return ids, prepared


def check_count(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an integer in range (not a bool or a float), else :class:`ConfigError`.

    >>> check_count("M", 32)
    32
    >>> check_count("query_batch", -1)
    Traceback (most recent call last):
    ...
    retrievekit.errors.ConfigError: query_batch must be an integer >= 1, got -1
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)


class ReadWriteLock:
    """Many readers or one writer: searches share it, ``add`` and ``remove`` take it alone (FAISS's
    HNSW crashes when one thread adds while another searches). A waiting writer goes first, so a
    stream of searches cannot starve an ``add``.

    >>> lock = ReadWriteLock()
    >>> with lock.reading(), lock.reading():
    ...     pass
    >>> with lock.writing():
    ...     pass
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writing and not self._waiting_writers)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._waiting_writers += 1
            self._condition.wait_for(lambda: not self._writing and self._readers == 0)
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class Index(ABC, Generic[Items, Queries]):
    """Base of every index. Subclasses store and score; this class owns ids, manifests and safety.

    ``Items`` is what ``add`` stores (vectors, texts, ...), ``Queries`` what ``search`` takes."""

    index_type: ClassVar[str]
    family: ClassVar[str] = "dense"
    # bumped when a code change alters the results for the same items, settings and queries: part of
    # the evaluation's run-cache keys, so a cached run never outlives the algorithm that made it
    revision: ClassVar[int] = 1

    def __init__(
        self,
        *,
        model_fingerprint: str | None = None,
        model_name: str | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        self.table = IdTable()
        self.model_fingerprint = model_fingerprint
        self.model_name = model_name
        self.model_options = dict(model_options or {})
        self.titles: dict[str, str] = {}  # optional, for display: document id -> title
        self._fingerprint: tuple[int, int, str] | None = None
        self.lock = ReadWriteLock()  # searches read, add/remove write

    def __len__(self) -> int:
        return len(self.table)

    @abstractmethod
    def add(self, ids: Sequence[str], items: Items, *, upsert: bool = False) -> None:
        """Store ``items`` under ``ids``; an existing id is an error unless ``upsert=True`` replaces it."""

    @abstractmethod
    def search(self, queries: Queries, k: int = 10) -> list[Hits]:
        """Per query, at most ``k`` results, best first."""

    @abstractmethod
    def _payload_digest(self) -> str:
        """A hash of the stored items (for :meth:`fingerprint`)."""

    def fingerprint(self) -> str:
        """A hash of everything that shapes this index's results: type, config, ids, removals and
        the stored items. Recomputed only after a change."""
        key = (id(self.table), self.table.version)
        if self._fingerprint is None or self._fingerprint[:2] != key:
            digest = fingerprint_json(
                {
                    "index_type": self.index_type,
                    "config": self.config(),
                    "model": self.model_fingerprint,
                    "ids": self.table.ids,
                    "deleted": np.flatnonzero(~self.table.alive).tolist(),
                    "items": self._payload_digest(),
                }
            )
            self._fingerprint = (*key, digest)
        return self._fingerprint[2]

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The parameters that rebuild this index (persisted in the manifest)."""

    @abstractmethod
    def _save_payload(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_payload(self, directory: Path, *, mmap: bool) -> None: ...

    def remove(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Remove items by id; return how many were removed (an id given twice is removed once)."""
        with self.lock.writing():
            return len(self.table.remove(ids, missing_ok=missing_ok))

    def check_model(self, fingerprint: str | None, *, force: bool = False) -> None:
        """Raise unless ``fingerprint`` is the model that produced this index's vectors."""
        if force or fingerprint is None or self.model_fingerprint is None:
            return
        if fingerprint != self.model_fingerprint:
            raise ConfigError(
                f"this index was built with model {self.model_name or '?'} ({self.model_fingerprint[:20]}...), "
                f"but the query model is {fingerprint[:20]}...; scores would be meaningless. "
                "Search with the same model, or pass force=True (--force) if you know they are compatible"
            )

    def save(self, directory: str | Path, *, overwrite: bool = True) -> Path:
        """Save atomically: ids (JSON), tombstones and vectors (``.npy``) or the engine's own files."""
        directory = Path(directory)
        config = self.config() | {
            "index_type": self.index_type,
            "size": len(self),
            "model": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "model_options": self.model_options,
        }
        with atomic_directory(directory, overwrite=overwrite) as staging:
            self.table.save(staging)
            self._save_payload(staging)
            if self.titles:
                (staging / "titles.json").write_text(json.dumps(self.titles, ensure_ascii=False))
            write_manifest(
                staging,
                Manifest(
                    kind=INDEX_KIND,
                    family=self.family,
                    config=config,
                    fingerprint=fingerprint_json([config, self.table.ids]),
                ),
            )
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> Index[Any, Any]:
        """Load a saved index of this class (or any index, called on :class:`Index`)."""
        index = load_index(directory, mmap=mmap)
        if not isinstance(index, cls):
            raise ArtifactError(f"{directory}: holds a {index.index_type} index, not a {cls.__name__}")
        return index

    def _check_payload(self, directory: Path) -> None:
        """Raise :class:`ArtifactError` unless the loaded payload agrees with the ids and config."""

    @classmethod
    @abstractmethod
    def _from_config(cls, config: dict[str, Any]) -> Index[Any, Any]:
        """A new empty index from the config :meth:`config` returned."""


class PositionalIndex(Index[Items, Queries]):
    """An index whose engine keeps items at integer positions and answers ``(scores, positions)``
    matrices: ``add`` and ``search`` (ids, locks, upserts, tombstones) are written once here; an
    engine implements :meth:`_prepare`, :meth:`_add_vectors` and :meth:`_search_vectors`."""

    @abstractmethod
    def _prepare(self, items: Any, what: str) -> Any:
        """Checked, engine-ready items or queries (``len()`` gives their count); ``what`` names them in errors."""

    @abstractmethod
    def _add_vectors(self, vectors: Any, start: int) -> None:
        """Store prepared items at positions ``start, start + 1, ...``."""

    @abstractmethod
    def _search_vectors(self, queries: Any, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, positions)`` of shape (n, k), best first; position -1 pads missing slots.
        ``alive`` (when not None) marks the positions that may be returned."""

    def add(self, ids: Sequence[str], items: Items, *, upsert: bool = False) -> None:
        """Add ``items`` under ``ids``. An existing id is an error unless ``upsert=True`` replaces it."""
        ids, prepared = ids_and_items(ids, items, self._prepare)
        if not ids:
            return
        with self.lock.writing():
            self.table.check_new(ids, upsert=upsert)
            self._add_vectors(prepared, self.table.capacity)
            self.table.append(ids)

    def compact(self) -> int:
        """Drop removed items for good (the engine keeps only the live positions, in order); return
        how many were dropped."""
        with self.lock.writing():
            dead = int((~self.table.alive).sum())
            if not dead:
                return 0
            alive = np.flatnonzero(self.table.alive)
            self._keep_positions(alive)
            self.table = IdTable([self.table.ids[p] for p in alive])
            return dead

    def _keep_positions(self, alive: np.ndarray) -> None:
        """Keep only the items at ``alive`` (ascending), renumbered from 0: the engine's part of
        :meth:`compact`."""
        raise ConfigError(f"a {self.index_type} index cannot be compacted; rebuild it from its live items")

    def search(self, queries: Queries, k: int = 10) -> list[Hits]:
        """Per query, at most ``k`` (id, score) pairs, best first. ``k`` above the size returns all items."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        prepared = self._prepare(queries, "queries")
        with self.lock.reading():
            if len(self) == 0:
                return [Hits.empty() for _ in range(len(prepared))]
            k = min(k, len(self))
            alive = self.table.alive.copy() if self.table.has_tombstones else None
            scores, positions = self._search_vectors(prepared, k, alive)
            # ids are read under the same lock: an add extends them and a compaction renumbers them
            keep = positions >= 0
            found = self.table.lookup(positions[keep])
        results, start = [], 0
        for row_scores, row_keep in zip(scores, keep, strict=True):
            count = int(row_keep.sum())
            results.append(Hits(found[start : start + count], row_scores[row_keep].astype(np.float32)))
            start += count
        return results


def load_index(directory: str | Path, *, mmap: bool = True) -> Index[Any, Any]:
    """Load any saved index; the manifest says which kind it is. Waits while another process swaps
    in a new version of the same folder, so it always reads one whole version. A database index
    (a LanceDB folder, a Milvus Lite ``*.db`` path, a Milvus ``http://`` URI) is connected to."""
    from retrievekit.index.database import database_index_type

    backend = database_index_type(directory)
    if backend is not None:
        database: Any = index_class(backend)
        index: Index[Any, Any] = database.connect(directory)
        return index
    with directory_lock(directory, exclusive=False):
        return _load_index(Path(directory), mmap=mmap)


def _load_index(directory: Path, *, mmap: bool) -> Index[Any, Any]:
    manifest = read_manifest(directory, expected_kind=INDEX_KIND)
    check_contained(directory)
    config = dict(manifest.config)
    try:
        cls = index_class(str(config.pop("index_type")))
        size = config.pop("size")
        model, fingerprint = config.pop("model", None), config.pop("model_fingerprint", None)
        options = config.pop("model_options", {})
        index = cls._from_config(config)
    except KeyError as exc:
        raise ArtifactError(f"{directory / 'manifest.json'}: the index config lacks {exc}") from None
    except (TypeError, ValueError) as exc:  # unknown keys, values out of range (ConfigError is a ValueError)
        raise ArtifactError(f"{directory / 'manifest.json'}: invalid index config: {exc}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArtifactError(f"{directory / 'manifest.json'}: size must be a count, got {size!r}")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ArtifactError(f"{directory / 'manifest.json'}: model_fingerprint must be a string")
    index.model_name, index.model_fingerprint, index.model_options = model, fingerprint, options
    try:
        index.table = IdTable.load(directory)
        index._load_payload(directory, mmap=mmap)
        if (directory / "titles.json").is_file():
            titles = json.loads((directory / "titles.json").read_text(encoding="utf-8"))
            if not isinstance(titles, dict):
                raise ArtifactError(f"{directory / 'titles.json'}: expected an object of id -> title")
            index.titles = titles
    except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{directory}: unreadable index payload ({exc})") from None
    if len(index) != size:
        raise ArtifactError(f"{directory}: the manifest says {size} items, the files hold {len(index)}")
    index._check_payload(directory)
    return index
