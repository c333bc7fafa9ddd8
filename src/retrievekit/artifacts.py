"""Self-describing artifacts: the manifest every saved directory carries, fingerprints, atomic saves.

Every directory retrievekit writes (a model, an index, embeddings, evaluation results) holds a
``manifest.json``::

    {"format_version": 1, "kind": "dense_encoder", "family": "dense",
     "retrievekit_version": "0.1.0", "created_at": "...", "config": {...}, "fingerprint": "sha256:..."}

Loading reads the manifest and dispatches on ``kind``; nothing is guessed from a directory name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrievekit._version import __version__
from retrievekit.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Manifest",
    "atomic_directory",
    "atomic_file",
    "atomic_write_lines",
    "atomic_write_text",
    "check_contained",
    "directory_lock",
    "files_digest",
    "fingerprint_files",
    "fingerprint_json",
    "manifest_from_dict",
    "read_manifest",
    "scratch_directory",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """What a saved directory holds and what produced it."""

    kind: str
    config: dict[str, Any]
    fingerprint: str
    family: str | None = None
    format_version: int = FORMAT_VERSION
    retrievekit_version: str = __version__
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "kind": self.kind,
            "family": self.family,
            "retrievekit_version": self.retrievekit_version,
            "created_at": self.created_at,
            "config": self.config,
            "fingerprint": self.fingerprint,
        }


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``directory`` (atomically, by rename) and return its path."""
    path = Path(directory) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(directory: str | Path, *, expected_kind: str | Iterable[str] | None = None) -> Manifest:
    """Read and check the manifest of a saved directory.

    Raises :class:`ArtifactError` when the manifest is missing, malformed, newer than this version
    of retrievekit understands, or of another kind than ``expected_kind``.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME}; this is not a directory saved by retrievekit")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: the manifest is not valid JSON ({exc})") from exc
    manifest = manifest_from_dict(raw, str(path))
    if expected_kind is not None:
        kinds = {expected_kind} if isinstance(expected_kind, str) else set(expected_kind)
        if manifest.kind not in kinds:
            raise ArtifactError(f"{directory}: holds a {manifest.kind!r}, expected {' or '.join(sorted(kinds))}")
    return manifest


def manifest_from_dict(raw: Any, where: str) -> Manifest:
    """A manifest from its JSON object (a file's or a database's metadata), checked: its keys, and a
    format version this retrievekit understands. ``where`` names its source in errors."""
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: the manifest is not a JSON object")
    missing = [key for key in ("format_version", "kind", "config", "fingerprint") if key not in raw]
    if missing:
        raise ArtifactError(f"{where}: the manifest lacks {', '.join(missing)}")
    version = raw["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format_version {version!r} is newer than this retrievekit understands "
            f"({FORMAT_VERSION}); upgrade retrievekit to load it"
        )
    if not isinstance(raw["config"], dict):
        raise ArtifactError(f"{where}: the manifest's config is not a JSON object")
    return Manifest(
        kind=raw["kind"],
        config=raw["config"],
        fingerprint=raw["fingerprint"],
        family=raw.get("family"),
        format_version=version,
        retrievekit_version=raw.get("retrievekit_version", "unknown"),
        created_at=raw.get("created_at", ""),
    )


def fingerprint_files(paths: Iterable[str | Path], *, extra: Any = None) -> str:
    """A content hash over files (names relative to nothing, contents in the given order) and extra JSON."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return "sha256:" + digest.hexdigest()


def _file_sha256(path: Path, cache: dict[str, list[Any]]) -> str:
    """sha256 of one file, reused while its size and modification time stay the same."""
    info = path.stat()
    key = str(path.resolve())
    known = cache.get(key)
    if known is not None and known[:2] == [info.st_size, info.st_mtime_ns]:
        return str(known[2])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    cache[key] = [info.st_size, info.st_mtime_ns, digest.hexdigest()]
    return digest.hexdigest()


def files_digest(root: str | Path, paths: Iterable[str | Path], *, cache_file: Path | None = None) -> str:
    """A hash of files by their path relative to ``root`` and their contents. Each file's hash is kept
    in ``cache_file`` (JSON) by size and modification time, so verifying a large model again is cheap.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "w.bin").write_bytes(b"abc")
    >>> files_digest(folder, [folder / "w.bin"]) == files_digest(folder, [folder / "w.bin"])
    True
    """
    root = Path(root)
    cache: dict[str, list[Any]] = {}
    if cache_file is not None and cache_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(cache_file.read_text(encoding="utf-8"))
            cache = loaded if isinstance(loaded, dict) else {}
    before = dict(cache)
    parts = sorted((Path(p).relative_to(root).as_posix(), _file_sha256(Path(p), cache)) for p in paths)
    if cache_file is not None and cache != before:
        with contextlib.suppress(OSError):  # a read-only cache only costs time
            atomic_write_text(cache_file, json.dumps(cache))
    return fingerprint_json(parts)


def fingerprint_json(value: Any) -> str:
    """A stable hash of a JSON-serialisable value."""
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


def staging_sibling(target: Path, kind: str) -> Path:
    """The hidden sibling in which ``target`` is built before a rename puts it in place:
    ``.NAME.KIND-HOST-PID-XXXXXXXX``, a name :func:`tidy_dead_staging` recognises once its process is gone."""
    return target.with_name(f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def tidy_dead_staging(target: Path) -> None:
    """Remove the staging siblings of ``target`` (files or folders) whose process died on this host,
    and put back a previous version such a save had moved aside (``old``) but not yet replaced."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old|tmp)-{_HOST}-(\d+)-[0-9a-f]{{8}}")
    for sibling in list(target.parent.iterdir()):
        found = pattern.fullmatch(sibling.name)
        if not found or int(found.group(2)) == os.getpid() or _process_alive(int(found.group(2))):
            continue
        if found.group(1) == "old" and not target.exists():
            os.replace(sibling, target)
        elif sibling.is_dir():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def check_contained(directory: str | Path) -> None:
    """Refuse a saved folder in which a file or folder is a link that leads outside it: an artifact's
    payload is read from the artifact, never from wherever a link points.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "ok.npy").write_bytes(b"")
    0
    >>> check_contained(folder)
    """
    root = Path(directory).resolve()
    for path in Path(directory).rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if target != root and root not in target.parents:
                raise ArtifactError(f"{path}: a link to {target}, outside the artifact; copy the file in instead")


@contextlib.contextmanager
def scratch_directory(purpose: str) -> Iterator[Path]:
    """A temporary folder ``retrievekit-PURPOSE-HOST-PID-XXXX`` in the system's temp dir, removed on
    exit; the folders of the same purpose left by killed processes on this host go first.

    >>> with scratch_directory("doctest") as folder:
    ...     folder.is_dir()
    True
    """
    import tempfile

    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"retrievekit-{re.escape(purpose)}-{_HOST}-(\d+)-.+")
    for leftover in root.glob(f"retrievekit-{purpose}-{_HOST}-*"):
        found = pattern.fullmatch(leftover.name)
        if found and int(found.group(1)) != os.getpid() and not _process_alive(int(found.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"retrievekit-{purpose}-{_HOST}-{os.getpid()}-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling to write ``path``'s new content into; on success it is renamed into
    place, so readers never see half a file and an interrupted write leaves the old file intact.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "plot.bin"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_bytes(b"png")
    >>> target.read_bytes()
    b'png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy_dead_staging(path)
    tmp = staging_sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    """Write lines (each followed by a newline) atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a whole text file atomically (see :func:`atomic_write_lines`)."""
    return atomic_write_lines(path, [text.removesuffix("\n")])


@contextlib.contextmanager
def directory_lock(target: str | Path, *, exclusive: bool) -> Iterator[None]:
    """An advisory lock on ``target`` through the sibling file ``.NAME.lock`` (``flock``): saves take
    it exclusively while they swap a new version in, loaders take it shared while they open the
    files, so two processes saving one folder take turns and a reader always sees a whole version.
    Where ``fcntl`` does not exist (Windows) it does nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    target = Path(target)
    if not target.parent.is_dir():
        yield
        return
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        handle = lock_path.open("a")
    except OSError:  # a read-only location: nobody can be saving there through us
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then move it into place in one rename.

    If the block raises, or the process dies part-way, ``target`` keeps its previous contents;
    the partly written sibling (``.NAME.partial-HOST-PID-XXXX``) is removed on error and is ignored by
    loaders. What a killed save left behind is tidied by the next save of the same target on the same
    host, once its process is gone: staging folders are removed, and a previous version moved aside
    (``.NAME.old-...``) is put back if the process died before the new one took its place.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_directory(root / "artifact") as tmp:
    ...     _ = (tmp / "a.txt").write_text("hello")
    >>> (root / "artifact" / "a.txt").read_text()
    'hello'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with directory_lock(target, exclusive=True):  # another save may be swapping its version in
        if target.exists() and not overwrite:
            raise ArtifactError(f"{target} already exists; pass overwrite=True to replace it")
        if target.exists() and not target.is_dir():
            raise ArtifactError(f"{target} exists and is not a directory")
        tidy_dead_staging(target)
    staging = staging_sibling(target, "partial")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # the swap is serialised with other saves and with readers (see directory_lock)
    with directory_lock(target, exclusive=True):
        backup = staging_sibling(target, "old")
        had_previous = target.exists()
        if had_previous:
            os.replace(target, backup)
        try:
            os.replace(staging, target)
        except BaseException:
            if had_previous:
                os.replace(backup, target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if had_previous:
            shutil.rmtree(backup, ignore_errors=True)
