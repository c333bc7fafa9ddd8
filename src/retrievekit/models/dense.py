"""Dense bi-encoders: one vector per text, queries and documents encoded by explicit methods."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from retrievekit.artifacts import Manifest, atomic_directory, files_digest, fingerprint_json, write_manifest
from retrievekit.errors import ConfigError
from retrievekit.models.encoding import (
    BatchRunner,
    ChunkOutput,
    EncodeStats,
    encode_chunks,
    prepare_texts,
    token_counts,
)
from retrievekit.models.npy_stream import NpyStreamWriter
from retrievekit.models.spec import SPAN_POOLING, EncoderSpec
from retrievekit.quantization import PRECISIONS, Int8Calibration, quantize
from retrievekit.scoring import similarity_matrix

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["CALIBRATION_FILE", "DENSE_KIND", "DenseEncoder", "EncodeOptions", "EncodedFile", "matryoshka"]

logger = logging.getLogger(__name__)

DENSE_KIND = "dense_encoder"
CALIBRATION_FILE = "int8_calibration.npy"  # the int8/uint8 ranges of a calibrated model, (2, dim)
# task settings kept beside the weights (entity linking's mention format): read at load, written at
# every save (a trained copy keeps them) and covered by the files digest
CARRIED_FILES = ("linking.json",)
_SIDES = ("queries", "documents")


def matryoshka(embeddings: np.ndarray, dimensions: int | None, *, renormalize: bool) -> np.ndarray:
    """Keep the first ``dimensions`` of each row (all of them for None), L2-normalised again when
    ``renormalize``: sentence-transformers' ``truncate_dim`` and OpenAI's ``dimensions``.

    >>> matryoshka(np.array([[3.0, 4.0, 12.0]]), 2, renormalize=True).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    if dimensions is not None:
        embeddings = embeddings[:, :dimensions]
    if renormalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


class EncodeOptions(TypedDict, total=False):
    """Keyword options of :meth:`DenseEncoder.encode_queries` and :meth:`DenseEncoder.encode_documents`.

    ``batch_size`` (32); ``max_tokens``: a padded-token budget per batch; ``max_length``: at most the
    model's; ``normalize``: None keeps the model's choice; ``truncate_dim``: Matryoshka, keep the first
    dimensions (re-normalised when the model normalises); ``precision``: float32 | float16 | int8 |
    uint8 | binary | ubinary (sentence-transformers' names and formulas); ``calibration``: the
    int8/uint8 ranges (default: the model's own, from :meth:`DenseEncoder.calibrate`); ``show_progress``.
    """

    batch_size: int
    max_tokens: int | None
    max_length: int | None
    normalize: bool | None
    truncate_dim: int | None
    precision: str
    calibration: Int8Calibration | None
    show_progress: bool


@dataclass(frozen=True)
class EncodedFile:
    """Embeddings streamed to a ``.npy`` file, with the counts gathered on the way."""

    path: Path
    count: int
    dimension: int
    stats: EncodeStats


def _dense(output: ChunkOutput) -> np.ndarray:
    if not isinstance(output, np.ndarray):
        raise TypeError(f"a dense tower produced {type(output).__name__}, not a matrix")
    return output


class DenseEncoder:
    """A bi-encoder with a query tower and a document tower (the same object when shared).

    Build one with :func:`retrievekit.load_encoder`. ``encode_queries`` applies the query prompt
    and the query tower; ``encode_documents`` the document prompt and the document tower.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        query_tower: Tower,
        document_tower: Tower,
        *,
        runners: Mapping[str, Sequence[BatchRunner]],
        name: str = "",
        fingerprint: str | None = None,
        backend: str = "torch",
        source: Path | None = None,
        runtime: str | None = None,
    ) -> None:
        self.spec = spec
        self.query_tower = query_tower
        self.document_tower = document_tower
        self._runners = runners
        self.name = name
        self.backend = backend
        self.source = source
        self._fingerprint = fingerprint
        self.runtime = runtime or backend  # e.g. "torch-float32", "onnx-int8": what caches of vectors key on
        self.calibration: Int8Calibration | None = None  # int8/uint8 ranges, from calibrate() or the saved model
        self.carried: dict[str, str] = {
            name: (source / name).read_text(encoding="utf-8")
            for name in CARRIED_FILES
            if source is not None and (source / name).is_file()
        }

    # ---- description -------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.document_tower.dimension

    @property
    def max_length(self) -> int:
        return self.document_tower.max_length

    @property
    def similarity_fn_name(self) -> str:
        """The similarity the model was trained with (``cosine`` or ``dot``), as sentence-transformers names it."""
        return self.spec.similarity

    def similarity(self, a: Any, b: Any) -> Any:
        """``(n, m)`` scores of every row of ``a`` against every row of ``b`` with the model's
        similarity (NumPy arrays or torch tensors; 1-d inputs count as one row).

        As sentence-transformers' ``model.similarity``: ``model.similarity(model.encode_query(q),
        model.encode_document(docs))``."""
        a = a[None, :] if a.ndim == 1 else a
        b = b[None, :] if b.ndim == 1 else b
        return similarity_matrix(a, b, self.similarity_fn_name)

    @property
    def normalizes(self) -> bool:
        return self.spec.document.normalize

    @property
    def fingerprint(self) -> str:
        """A content hash of the weights and the encoding config; indexes and caches are keyed by it."""
        if self._fingerprint is None:
            towers = {id(t): t for t in (self.query_tower, self.document_tower)}.values()
            config = self.spec.to_dict()
            for key in ("source_format", "extra"):
                config.pop(key)
            for side, tower in (("query", self.query_tower), ("document", self.document_tower)):
                # folder names do not change what the model computes; an unset max_length is the
                # tokenizer's limit, which a save writes down: the same model either way
                config[side].pop("backbone")
                config[side].pop("projections")
                config[side]["max_length"] = tower.max_length
            self._fingerprint = fingerprint_json(
                {
                    "weights": [t.digest() for t in towers],
                    "tokenizers": [t.tokenizer_digest() for t in towers],
                    "config": config,
                }
            )
        return self._fingerprint

    def pool_spans(self, start_marker: str, end_marker: str) -> None:
        """Pool each text's marked span (``start_marker`` ... ``end_marker``, markers included)
        instead of the whole text, in every tower (texts without the start marker, such as entity
        descriptions, are still pooled whole): entity linking's mention vector, read in context. The
        setting is part of the model's config: saved with it, and in its fingerprint."""
        if self.backend != "torch":
            raise ConfigError(
                "span pooling is set on a torch model; save it and load the saved folder with this backend"
            )
        towers = {id(t): t for t in (self.query_tower, self.document_tower)}.values()
        for tower in towers:
            tower.pool_spans(start_marker, end_marker)
        self.spec = self.spec.with_towers(pooling=SPAN_POOLING, span_markers=(start_marker, end_marker))
        self._fingerprint = None  # the config changed: so do the vectors

    def load_options(self) -> dict[str, object]:
        """The :func:`load_encoder` options that rebuild this encoder from its source folder
        (what an index records so that ``search`` can load the same model)."""
        options: dict[str, object] = {
            "query_prompt": self.spec.query_prompt,
            "document_prompt": self.spec.document_prompt,
        }
        if self.spec.source_format == "huggingface":
            tower = self.spec.document
            options |= {"pooling": tower.pooling, "normalize": tower.normalize, "max_length": tower.max_length}
        return options

    def __repr__(self) -> str:
        towers = "shared tower" if self.spec.shared else "two towers"
        return (
            f"DenseEncoder({self.name!r}, dim={self.dimension}, pooling={self.spec.document.pooling}, "
            f"normalize={self.normalizes}, max_length={self.max_length}, {towers}, backend={self.backend})"
        )

    # ---- encoding ----------------------------------------------------------------------------
    def encode_queries(self, texts: str | Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """Encode queries (with the query prompt) into a ``(len(texts), dim)`` array; a single string
        gives one ``(dim,)`` vector.

        Options: see :class:`EncodeOptions`."""
        return self._encode(texts, "queries", **options)

    def encode_documents(self, texts: str | Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """Encode documents (with the document prompt) into a ``(len(texts), dim)`` array; a single
        string gives one ``(dim,)`` vector.

        Options: see :class:`EncodeOptions`."""
        return self._encode(texts, "documents", **options)

    def encode_query(self, texts: str | Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """sentence-transformers' name for :meth:`encode_queries`."""
        return self._encode(texts, "queries", **options)

    def encode_document(self, texts: str | Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """sentence-transformers' name for :meth:`encode_documents`."""
        return self._encode(texts, "documents", **options)

    def calibrate(self, texts: Sequence[str], **options: Unpack[EncodeOptions]) -> Int8Calibration:
        """Fit the ``int8``/``uint8`` ranges on documents (a representative sample of the corpus) and
        keep them with the model: later ``precision="int8"`` calls on either side use them, and
        :meth:`save` stores them."""
        self.calibration = Int8Calibration.fit(self._encode(texts, "documents", **(options | {"precision": "float32"})))
        return self.calibration

    def _encode(
        self,
        texts: str | Sequence[str],
        side: str,
        *,
        batch_size: int = 32,
        max_tokens: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        calibration: Int8Calibration | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode one side; the options are described on :class:`EncodeOptions`."""
        if isinstance(texts, str):
            single: np.ndarray = self._encode(
                [texts], side, batch_size=batch_size, max_tokens=max_tokens, max_length=max_length,
                normalize=normalize, truncate_dim=truncate_dim, precision=precision, calibration=calibration,
                show_progress=show_progress,
            )  # fmt: skip
            return single[0]
        texts = list(texts)
        self._check_options(precision, truncate_dim)
        if not texts:
            return np.empty((0, truncate_dim or self.dimension), dtype=np.float32)
        stats = EncodeStats()
        limit = self._effective_max_length(side, max_length)
        chunks = self._chunks(texts, side, batch_size, max_tokens, limit, show_progress, len(texts), stats)
        embeddings = np.concatenate([self._finish(_dense(c), normalize, truncate_dim) for c in chunks])
        stats.report(limit)
        return quantize(embeddings, precision, calibration or self.calibration)

    def encode_to_npy(
        self,
        texts: Iterable[str],
        path: str | Path,
        *,
        side: str,
        total: int | None = None,
        batch_size: int = 32,
        max_tokens: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        chunk_size: int = 8192,
        show_progress: bool = False,
    ) -> EncodedFile:
        """Stream any number of texts into a float32 ``.npy`` file with bounded memory.

        Only ``chunk_size`` texts and their embeddings are in memory at once; the file can be opened
        with ``np.load(path, mmap_mode="r")``. The file appears only when complete.
        """
        if side not in _SIDES:
            raise ConfigError(f"side must be one of {_SIDES}, got {side!r}")
        self._check_options("float32", truncate_dim)
        stats = EncodeStats()
        dim = truncate_dim or self.dimension
        limit = self._effective_max_length(side, max_length)
        chunks = self._chunks(texts, side, batch_size, max_tokens, limit, show_progress, total, stats, chunk_size)
        with NpyStreamWriter(path, dim) as writer:
            for chunk in chunks:
                writer.append(self._finish(_dense(chunk), normalize, truncate_dim))
        stats.report(limit)
        return EncodedFile(Path(path), writer.count, dim, stats)

    def _check_options(self, precision: str, truncate_dim: int | None) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if truncate_dim is not None and not 0 < truncate_dim <= self.dimension:
            raise ConfigError(f"truncate_dim must be between 1 and {self.dimension}, got {truncate_dim}")

    def _tower(self, side: str) -> Tower:
        return self.query_tower if side == "queries" else self.document_tower

    def _effective_max_length(self, side: str, max_length: int | None) -> int:
        limit = self._tower(side).max_length
        if max_length is not None:
            if max_length < 2:
                raise ConfigError(f"max_length must be at least 2, got {max_length}")
            if max_length > limit:
                logger.warning(
                    "max_length %d is above the model's limit of %d tokens: capped to %d", max_length, limit, limit
                )
            limit = min(limit, max_length)
        return limit

    def _chunks(self, texts, side, batch_size, max_tokens, limit, show_progress, total, stats, chunk_size=8192):
        """The engine over ``texts``; ``limit`` is the effective max length (:meth:`_effective_max_length`)."""
        tower = self._tower(side)
        return encode_chunks(
            texts,
            tokenizer=tower.tokenizer,
            runners=self._runners[side],
            max_length=limit,
            batch_size=batch_size,
            max_tokens=max_tokens,
            chunk_size=chunk_size,
            prompt=self.spec.query_prompt if side == "queries" else self.spec.document_prompt,
            lowercase=tower.spec.do_lower_case,
            show_progress=show_progress,
            total=total,
            stats=stats,
            description=f"Encoding {side}",
        )

    def _finish(self, embeddings: np.ndarray, normalize: bool | None, truncate_dim: int | None) -> np.ndarray:
        renormalize = normalize if normalize is not None else (self.normalizes and truncate_dim is not None)
        return matryoshka(embeddings, truncate_dim, renormalize=renormalize)

    def token_counts(
        self, texts: Sequence[str], side: str = "documents", *, max_length: int | None = None
    ) -> tuple[list[int], list[bool]]:
        """Tokens each text takes on ``side`` (prompt and special tokens included, at most the
        model's limit) and whether it would be cut; nothing is run."""
        tower = self._tower(side)
        prompt = self.spec.query_prompt if side == "queries" else self.spec.document_prompt
        prepared = prepare_texts(list(texts), prompt, tower.spec.do_lower_case)
        return token_counts(tower.tokenizer, prepared, self._effective_max_length(side, max_length))

    # ---- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = True, training: dict | None = None) -> Path:
        """Save in retrievekit's format, which is also a sentence-transformers folder.

        Writes ``manifest.json`` (kind ``dense_encoder``) and safetensors weights in the
        sentence-transformers layout (``modules.json``, ``1_Pooling``, ``Dense``/``Normalize``,
        prompts in ``config_sentence_transformers.json``); two towers are written as a
        sentence-transformers ``Router``. ``training`` (the training config and data fingerprints)
        is recorded in the manifest. The save is atomic.
        """
        from retrievekit.models.st_format import write_sentence_transformers_files

        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as staging:
            if self.spec.shared:
                saved = self.query_tower.save(staging)
                query_spec = document_spec = saved.spec
                layouts = {"shared": saved.modules}
            else:
                saved_q = self.query_tower.save(staging, prefix="query")
                saved_d = self.document_tower.save(staging, prefix="document")
                query_spec, document_spec = saved_q.spec, saved_d.spec
                layouts = {"query": saved_q.modules, "document": saved_d.modules}
            spec = EncoderSpec(
                query=query_spec,
                document=document_spec,
                shared=self.spec.shared,
                query_prompt=self.spec.query_prompt,
                document_prompt=self.spec.document_prompt,
                similarity=self.spec.similarity,
                source_format="retrievekit",
                extra=self.spec.extra,
            )
            write_sentence_transformers_files(staging, spec, layouts)
            if self.calibration is not None:
                self.calibration.save(staging / CALIBRATION_FILE)
            for name, text in self.carried.items():
                (staging / name).write_text(text, encoding="utf-8")
            from retrievekit.models.tower import model_files

            files = files_digest(staging, model_files(staging))  # verified when the folder is loaded
            write_manifest(
                staging,
                Manifest(
                    kind=DENSE_KIND,
                    family="dense",
                    config=spec.to_dict()
                    | {"dimension": self.dimension, "name": self.name, "files_digest": files}
                    | ({"training": training} if training else {}),
                    fingerprint=self.fingerprint,
                ),
            )
        logger.info("saved %s to %s", self.name or "encoder", directory)
        return directory

    def with_devices(self, devices: list, dtype: str = "float32") -> DenseEncoder:
        """A copy of this torch encoder that runs on ``devices`` (one replica per device)."""
        from retrievekit.models.backends.torch_runner import TorchRunner

        if self.backend != "torch":
            raise ConfigError("devices apply to the torch backend only")
        runners: dict[str, list[BatchRunner]] = {}
        replicas: dict[int, list[Tower]] = {}
        for side in _SIDES:
            tower = self._tower(side)
            if id(tower) not in replicas:
                replicas[id(tower)] = [tower if i == 0 else copy.deepcopy(tower) for i in range(len(devices))]
            runners[side] = [TorchRunner(t, d, dtype) for t, d in zip(replicas[id(tower)], devices, strict=True)]
        copy_ = DenseEncoder(
            self.spec,
            self.query_tower,
            self.document_tower,
            runners=runners,
            name=self.name,
            fingerprint=self._fingerprint,
            backend="torch",
            source=self.source,
            runtime=f"torch-{dtype}",
        )
        copy_.calibration = self.calibration
        copy_.carried = dict(self.carried)
        return copy_
