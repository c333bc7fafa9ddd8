"""Encoding on Ray Data: a corpus of any size, encoded by a pool of model replicas on one machine or
a cluster, written as shards. Needs ``retrievekit[ray]``.

The pipeline is Ray Data's own:

1. The driver cuts the corpus file into blocks of lines (a byte scan, no parsing:
   :func:`~retrievekit.data.readers.line_blocks`); each block is read and parsed by a Ray task
   with the same reader as local encoding (:func:`~retrievekit.data.readers.iter_numbered_documents`),
   so a bad line is the same one-line ``file:line`` error.
2. An actor pool of ``replicas`` model replicas (``ActorPoolStrategy``) encodes the texts: each
   replica loads the model from a :class:`ModelRecipe` (the same loader, options and backend as
   local encoding, any family) and checks that its fingerprint is the driver's.
3. The driver receives the encoded rows in corpus order (``preserve_order``), checks that every
   line arrives once and in order (ids unique across the whole corpus, as the local reader checks
   them), and writes shards of ``shard_rows`` rows: each shard is the local encode layout
   (``embeddings.npy`` / ``vectors/`` + ``ids.json``), and one ``manifest.json`` describes the set.

A replica that dies is restarted by Ray and its block retried (Ray Data's actor pools default to
unlimited ``max_restarts`` and ``max_task_retries``); since the driver writes rows in order from
Ray's output stream, a retried block is neither lost nor written twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.artifacts import Manifest, atomic_directory, fingerprint_files, write_manifest
from retrievekit.data.beir import collection_file
from retrievekit.data.readers import iter_numbered_documents, iter_numbered_queries, line_blocks
from retrievekit.errors import ConfigError, DataFormatError

__all__ = ["ModelRecipe", "RayEncoding", "RaySettings", "encode_with_ray"]

logger = logging.getLogger(__name__)

_FAMILIES = ("dense", "multivector", "sparse")


def _ray() -> Any:
    return require("ray", extra="ray", purpose="encoding on Ray Data (--engine ray)")


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to encode on Ray.

    ``address``: ``None`` starts (or reuses) a local Ray; ``"auto"`` or ``"ray://host:10001"`` joins
    a cluster. ``replicas`` model replicas each take ``cpus_per_replica`` CPUs (their torch threads)
    and ``gpus_per_replica`` GPUs; reading takes none, so a pool as large as the machine does not
    starve the readers. The corpus is read in blocks of ``rows_per_block`` lines (also what one
    replica call encodes) and written in shards of ``shard_rows`` rows.
    """

    address: str | None = None
    replicas: int = 1
    cpus_per_replica: int = 1
    gpus_per_replica: float = 0
    rows_per_block: int = 1024
    shard_rows: int = 65536

    def __post_init__(self) -> None:
        for name in ("replicas", "cpus_per_replica", "rows_per_block", "shard_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.gpus_per_replica, int | float) or self.gpus_per_replica < 0:
            raise ConfigError(f"gpus_per_replica must be >= 0, got {self.gpus_per_replica!r}")


@dataclass(frozen=True)
class ModelRecipe:
    """How a replica loads the model: the family's loader, the model's path or name and its loading
    options. Plain data, so Ray ships it to every worker; :meth:`of` reads it off a loaded encoder."""

    family: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, encoder: Any, *, trust_remote_code: bool = False) -> ModelRecipe:
        family = getattr(encoder, "family", "dense")
        if family not in _FAMILIES:
            raise ConfigError(f"encoding on Ray supports dense, ColBERT and sparse models, not {family} ones")
        name = str(encoder.name)
        model = str(Path(name).resolve()) if Path(name).exists() else name
        options = dict(encoder.load_options()) | {"backend": encoder.backend, "trust_remote_code": trust_remote_code}
        backend, _, detail = str(getattr(encoder, "runtime", encoder.backend)).partition("-")
        if backend == "torch" and detail:  # the same precision on every replica: "torch-float16"
            options["dtype"] = detail
        elif backend == "onnx" and detail and family != "sparse":  # "onnx-int8", "onnx-fp32"
            options["quantize"] = None if detail == "fp32" else detail
        return cls(family, model, options)

    def load(self, device: str | None = None) -> Any:
        from retrievekit.models import load_colbert, load_encoder, load_sparse_encoder

        loaders: dict[str, Callable[..., Any]] = {
            "dense": load_encoder, "multivector": load_colbert, "sparse": load_sparse_encoder,
        }  # fmt: skip
        return loaders[self.family](self.model, **self.options, device=device)


class _EncodeReplica:
    """One model replica of the actor pool: encodes a batch of rows (``line``, ``id``, ``text``)."""

    def __init__(
        self, recipe: ModelRecipe, side: str, batch_size: int, fingerprint: tuple[str, str], threads: int, gpu: bool
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = recipe.load("cuda" if gpu else None)
        if (self.model.fingerprint, self.model.runtime) != tuple(fingerprint):
            raise ConfigError(
                f"a replica loaded {recipe.model} as another model or runtime "
                f"({self.model.fingerprint[:20]}..., {self.model.runtime})"
            )
        self.side, self.batch_size, self.family = side, batch_size, recipe.family

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = batch["text"].tolist()
        encode = self.model.encode_documents if self.side == "documents" else self.model.encode_queries
        output = encode(texts, batch_size=self.batch_size)
        rows: dict[str, Any] = {"line": batch["line"], "id": batch["id"]}
        if self.family == "dense":
            rows["vector"] = np.asarray(output, dtype=np.float32)
        elif self.family == "multivector":
            rows["tokens"] = _object_column([np.asarray(output[i], dtype=np.float32) for i in range(len(output))])
        else:
            pieces = [output.row(i) for i in range(len(output))]
            rows["indices"] = _object_column([np.asarray(i, dtype=np.int32) for i, _ in pieces])
            rows["values"] = _object_column([np.asarray(v, dtype=np.float32) for _, v in pieces])
        return rows


def _object_column(arrays: list[np.ndarray]) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


def _read_block(block: dict[str, np.ndarray], *, path: str, side: str) -> dict[str, Any]:
    """Parse the lines of one block (a Ray task): the local reader, so errors name file:line."""
    reader = iter_numbered_documents if side == "documents" else iter_numbered_queries
    lines, ids, texts = [], [], []
    for start, first, count in zip(block["start"], block["first"], block["count"], strict=True):
        for number, record in reader(path, start=int(start), first_number=int(first), limit=int(count)):
            lines.append(number)
            ids.append(record.id)
            texts.append(record.full_text if side == "documents" else record.text)  # type: ignore[union-attr]
    return {"line": np.asarray(lines, dtype=np.int64), "id": np.asarray(ids, dtype=object),
            "text": np.asarray(texts, dtype=object)}  # fmt: skip


@dataclass(frozen=True)
class RayEncoding:
    """What :func:`encode_with_ray` wrote: the folder, its manifest config, rows/s and wall time."""

    directory: Path
    config: dict[str, Any]
    seconds: float

    @property
    def count(self) -> int:
        return int(self.config["count"])


class _ShardWriter:
    """Rows in corpus order -> ``shard-NNNNN`` folders of at most ``shard_rows`` rows each."""

    def __init__(self, root: Path, family: str, dimension: int, shard_rows: int) -> None:
        self.root, self.family, self.dimension, self.shard_rows = root, family, dimension, shard_rows
        self.shards: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._parts: list[Any] = []
        self.tokens = self.nonzeros = 0

    def add(self, batch: dict[str, Any]) -> None:
        start = 0
        n = len(batch["id"])
        while start < n:
            room = self.shard_rows - len(self._ids)
            stop = min(n, start + room)
            self._ids.extend(str(i) for i in batch["id"][start:stop])
            self._parts.append({key: value[start:stop] for key, value in batch.items()})
            start = stop
            if len(self._ids) == self.shard_rows:
                self.close_shard()

    def close_shard(self) -> None:
        if not self._ids:
            return
        from retrievekit.outputs import MultiVectors, SparseVectors

        name = f"shard-{len(self.shards):05d}"
        folder = self.root / name
        folder.mkdir()
        if self.family == "dense":
            vectors = np.concatenate([np.asarray(p["vector"], dtype=np.float32).reshape(-1, self.dimension)
                                      for p in self._parts])  # fmt: skip
            np.save(folder / "embeddings.npy", vectors, allow_pickle=False)
        elif self.family == "multivector":
            rows = [
                np.asarray(t, dtype=np.float32).reshape(-1, self.dimension) for p in self._parts for t in p["tokens"]
            ]
            MultiVectors.from_list(rows, self.dimension).save(folder / "vectors")
            self.tokens += sum(len(r) for r in rows)
        else:
            indices = [np.asarray(i, dtype=np.int32) for p in self._parts for i in p["indices"]]
            values = [np.asarray(v, dtype=np.float32) for p in self._parts for v in p["values"]]
            indptr = np.concatenate([[0], np.cumsum([len(i) for i in indices])]).astype(np.int64)
            SparseVectors(
                indptr, np.concatenate(indices) if indices else np.empty(0, np.int32),
                np.concatenate(values) if values else np.empty(0, np.float32), self.dimension,
            ).save(folder / "vectors")  # fmt: skip
            self.nonzeros += int(indptr[-1])
        (folder / "ids.json").write_text(json.dumps(self._ids, ensure_ascii=False))
        self.shards.append({"name": name, "count": len(self._ids)})
        self._ids, self._parts = [], []


def _start_ray(address: str | None) -> Any:
    ray = _ray()
    for name in ("ray", "ray.data"):  # our progress bar and table report the run; Ray's INFO lines repeat it
        logging.getLogger(name).setLevel(logging.WARNING if name == "ray" else logging.ERROR)
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address is None:
            ray.init(num_cpus=os.cpu_count() or 1, **options)
        else:
            ray.init(address=address, **options)
    return ray


def encode_with_ray(
    encoder: Any,
    source: str | Path,
    output: str | Path,
    *,
    side: str = "documents",
    settings: RaySettings | None = None,
    batch_size: int = 32,
    recipe: ModelRecipe | None = None,
    trust_remote_code: bool = False,
    show_progress: bool = True,
) -> RayEncoding:
    """Encode a corpus (JSONL/TSV file or BEIR folder) on Ray Data into ``output`` as shards.

    ``encoder`` is the model loaded on the driver (its fingerprint, dimension and name go into the
    manifest; every replica must load the same model). ``recipe`` overrides how replicas load it
    (default :meth:`ModelRecipe.of`). ``settings``: see :class:`RaySettings`.
    """
    settings = settings or RaySettings()
    if side not in ("documents", "queries"):
        raise ConfigError(f"side must be 'documents' or 'queries', got {side!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    replicas, cpus_per_replica, gpus_per_replica = (
        settings.replicas,
        settings.cpus_per_replica,
        settings.gpus_per_replica,
    )
    recipe = recipe or ModelRecipe.of(encoder, trust_remote_code=trust_remote_code)
    family = recipe.family
    dimension = int(encoder.vocab_size if family == "sparse" else encoder.dimension)
    path = collection_file(source, side)
    blocks = line_blocks(path, settings.rows_per_block)
    if not blocks:
        raise DataFormatError(path, "the file is empty")
    ray = _start_ray(settings.address)
    available = float(ray.cluster_resources().get("CPU", 0))
    if replicas * cpus_per_replica > available:
        raise ConfigError(
            f"{replicas} replicas x {cpus_per_replica} CPUs need {replicas * cpus_per_replica} CPUs; the Ray cluster "
            f"has {available:g}. Use fewer --replicas or --cpus-per-replica"
        )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.raise_original_map_exception = True  # a bad line arrives as our DataFormatError, not wrapped
    descriptors = [{"start": b.start, "first": b.first_number, "count": b.count} for b in blocks]
    dataset = ray.data.from_items(descriptors, override_num_blocks=len(descriptors))
    dataset = dataset.map_batches(
        _read_block, fn_kwargs={"path": str(path), "side": side}, batch_size=None, batch_format="numpy", num_cpus=0
    )
    dataset = dataset.map_batches(
        _EncodeReplica,
        fn_constructor_kwargs={
            "recipe": recipe, "side": side, "batch_size": batch_size,
            "fingerprint": (encoder.fingerprint, encoder.runtime),
            "threads": cpus_per_replica, "gpu": gpus_per_replica > 0,
        },
        compute=ray.data.ActorPoolStrategy(size=replicas),
        batch_size=None,  # one block (rows_per_block texts) per call
        batch_format="numpy",
        num_cpus=cpus_per_replica,
        num_gpus=gpus_per_replica,
    )  # fmt: skip
    # (Ray Data restarts a dead replica and retries its block: max_restarts = max_task_retries = -1)
    total = sum(b.count for b in blocks)
    started = time.perf_counter()
    output = Path(output)
    with atomic_directory(output) as staging:
        writer = _ShardWriter(staging, family, dimension, settings.shard_rows)
        count = _drain(dataset, writer, path, total, show_progress)
        writer.close_shard()
        seconds = time.perf_counter() - started
        config = {
            "model": encoder.name, "model_fingerprint": encoder.fingerprint, "side": side, "count": count,
            "dimension": dimension, "backend": encoder.backend, "source": str(path), "engine": "ray",
            "replicas": replicas, "cpus_per_replica": cpus_per_replica, "gpus_per_replica": gpus_per_replica,
            "seconds": round(seconds, 3), "shards": writer.shards,
        }  # fmt: skip
        if family == "dense":
            config |= {"precision": "float32", "similarity": encoder.similarity_fn_name,
                       "normalized": encoder.normalizes, "max_length": encoder.max_length}  # fmt: skip
        elif family == "multivector":
            config["token_vectors"] = writer.tokens
        else:
            config["nonzeros"] = writer.nonzeros
        from retrievekit.embeddings import kind_of_family

        write_manifest(
            staging,
            Manifest(
                kind=kind_of_family(family),
                family=family,
                config=config,
                fingerprint=fingerprint_files([path], extra=config | {"seconds": None}),
            ),
        )
    return RayEncoding(output, config, seconds)


def _drain(dataset: Any, writer: _ShardWriter, path: Path, total: int, show_progress: bool) -> int:
    """Write Ray's output stream in order, checking that each line comes once: returns the row count."""
    from tqdm.auto import tqdm

    first_line: dict[str, int] = {}
    last = 0
    with tqdm(total=total, desc="Encoding on Ray", unit="text", disable=not show_progress) as bar:
        for batch in _batches(dataset):
            lines = np.asarray(batch["line"], dtype=np.int64)
            if len(lines) and (lines[0] <= last or (np.diff(lines) <= 0).any()):
                raise RuntimeError(
                    f"Ray returned line {int(lines[0])} after line {last}: rows out of order or repeated"
                )
            for number, identifier in zip(lines.tolist(), batch["id"].tolist(), strict=True):
                if identifier in first_line:
                    raise DataFormatError(
                        path, f"duplicate id {identifier!r} (first seen on line {first_line[identifier]})", number
                    )
                first_line[identifier] = number
            if len(lines):
                last = int(lines[-1])
            writer.add(batch)
            bar.update(len(lines))
    if len(first_line) > total:
        raise RuntimeError(f"Ray returned {len(first_line)} rows for {total} lines")
    return len(first_line)


def _batches(dataset: Any) -> Iterator[dict[str, Any]]:
    """The dataset's output batches; a failure inside Ray that is one of ours is re-raised as it was."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:
        cause = _our_error(exc)
        if cause is not None:
            raise cause from None
        raise


def _our_error(exc: BaseException) -> BaseException | None:
    """The retrievekit error (bad line, wrong model) a Ray task raised, if that is what ``exc`` wraps
    (Ray nests it in its own task and user-code errors: ``cause``, ``__cause__``, ``__context__``)."""
    from retrievekit.errors import RetrievekitError

    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RetrievekitError) and type(current).__module__ == "retrievekit.errors":
            return current  # ours, not Ray's wrapper class that derives from it
        for linked in (getattr(current, "cause", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return None
