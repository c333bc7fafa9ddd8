"""Learned sparse retrieval (SPLADE): a masked-LM's logits turned into one weight per vocabulary
entry, scored by sparse dot product.

A :class:`SparseEncoder` is a tower with the SPLADE head (:class:`~retrievekit.models.heads.SpladeHead`:
``log(1 + relu(logit))``, max or sum over the tokens) run by the shared encoding engine; its outputs
are :class:`~retrievekit.outputs.SparseVectors` (CSR rows over the vocabulary), pruned to
``max_active_dims`` when set. They equal sentence-transformers' ``SparseEncoder.encode`` for the
same model. An inference-free model reads queries with a static per-token table instead
(:class:`~retrievekit.models.query_table.QueryTable`): no model run per query.
:func:`load_sparse_encoder` reads sentence-transformers ``SparseEncoder`` folders (inference-free
Routers included) and plain masked-LM folders; :meth:`SparseEncoder.save` writes
sentence-transformers' layout (plus retrievekit's manifest), which ``SparseEncoder(path)`` loads.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrievekit.artifacts import (
    Manifest,
    atomic_directory,
    files_digest,
    read_manifest,
    write_manifest,
)
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.encoding import EncodeStats, encode_chunks
from retrievekit.models.query_table import QueryTable
from retrievekit.models.single_tower import SingleTowerEncoder, package_version, torch_runners, write_json
from retrievekit.models.sparse_format import SPARSE_KIND, SparseConfig, read_sparse_layout
from retrievekit.models.terms import TermWeights
from retrievekit.outputs import SparseVectors
from retrievekit.resolve import resolve_model
from retrievekit.scoring import sparse_dot

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["SparseConfig", "SparseEncoder", "load_sparse_encoder"]

logger = logging.getLogger(__name__)

_POOLING_FOLDER = "1_SpladePooling"
# an inference-free model's Router folders, named as sentence-transformers names them
_QUERY_TABLE = "query_0_SparseStaticEmbedding"
_ROUTED_TRANSFORMER = "document_0_MLMTransformer"
_ROUTED_POOLING = "document_1_SpladePooling"
_ST_ROUTER = "sentence_transformers.models.Router"
_ST_MODULES = "sentence_transformers.sparse_encoder.models"  # sentence-transformers 5 and 6 both read it


class SparseEncoder(TermWeights, SingleTowerEncoder):
    """A SPLADE model: ``encode_queries``/``encode_documents`` give
    :class:`~retrievekit.outputs.SparseVectors`; :meth:`similarity` is their dot product;
    :meth:`decode` names the weighted terms. Build one with :func:`load_sparse_encoder`."""

    family = "sparse"
    similarity_fn_name = "dot"
    kind = SPARSE_KIND
    config: SparseConfig

    def __init__(
        self, tower: Tower, config: SparseConfig, *, query_table: QueryTable | None = None, **options: Any
    ) -> None:
        super().__init__(tower, config, **options)
        if query_table is not None and query_table.vocab_size != self.vocab_size:
            raise ArtifactError(
                f"the static query table has {query_table.vocab_size} weights for a vocabulary of {self.vocab_size}"
            )
        self.query_table = query_table

    @property
    def inference_free(self) -> bool:
        """Queries are read by a static per-token table, not by the model."""
        return self.query_table is not None

    def _fingerprint_parts(self) -> dict[str, str]:
        return {} if self.query_table is None else {"query_table": self.query_table.digest()}

    @property
    def vocab_size(self) -> int:
        return int(self.tower.backbone.config.vocab_size)

    @property
    def dimension(self) -> int:
        """The vocabulary size: one weight per vocabulary entry."""
        return self.vocab_size

    @property
    def max_length(self) -> int:
        """Tokens read per text (``max_length``, or the tokenizer's and positions' limit)."""
        return self.tower.max_length

    def load_options(self) -> dict[str, object]:
        """The :func:`load_sparse_encoder` options that rebuild this encoder from its source folder."""
        return {"max_active_dims": self.config.max_active_dims, "max_length": self.config.max_length}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"SparseEncoder({self.name!r}, vocabulary={self.vocab_size}, pooling={c.pooling!r}, "
            f"activation={c.activation!r}, max_active_dims={c.max_active_dims}, max_length={self.max_length}, "
            f"inference_free={self.inference_free}, backend={self.runtime!r})"
        )

    # ---- encoding ----------------------------------------------------------------------------
    def encode_queries(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> SparseVectors:  # fmt: skip
        """Encode queries (a single string gives one row)."""
        return self._encode(texts, "queries", batch_size, max_tokens, show_progress)

    def encode_documents(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> SparseVectors:  # fmt: skip
        """Encode documents (a single string gives one row)."""
        return self._encode(texts, "documents", batch_size, max_tokens, show_progress)

    def encode_query(self, texts: str | Sequence[str], **options: Any) -> SparseVectors:
        """sentence-transformers' name for :meth:`encode_queries`."""
        return self.encode_queries(texts, **options)

    def encode_document(self, texts: str | Sequence[str], **options: Any) -> SparseVectors:
        """sentence-transformers' name for :meth:`encode_documents`."""
        return self.encode_documents(texts, **options)

    def _encode(
        self, texts: str | Sequence[str], side: str, batch_size: int, max_tokens: int | None, show_progress: bool
    ) -> SparseVectors:
        rows = [texts] if isinstance(texts, str) else list(texts)
        stats = EncodeStats()
        chunks = list(
            self.encode_chunks(
                rows, side, batch_size=batch_size, max_tokens=max_tokens, show_progress=show_progress,
                total=len(rows), stats=stats,
            )
        )  # fmt: skip
        stats.report(self.max_length)
        if not chunks:
            return SparseVectors.empty(self.vocab_size)
        return SparseVectors.concatenate(chunks)

    def encode_chunks(
        self,
        texts: Iterable[str],
        side: str,
        *,
        batch_size: int = 32,
        max_tokens: int | None = None,
        chunk_size: int = 4096,
        show_progress: bool = False,
        total: int | None = None,
        stats: EncodeStats | None = None,
    ) -> Iterator[SparseVectors]:
        """Encode ``side`` (``queries`` or ``documents``) chunk by chunk, for streams of any length."""
        if side not in ("queries", "documents"):
            raise ConfigError(f"side must be 'queries' or 'documents', got {side!r}")
        prompt = self.config.query_prompt if side == "queries" else self.config.document_prompt
        if side == "queries" and self.query_table is not None:
            yield from self._table_chunks(texts, prompt, chunk_size, stats)
            return
        for chunk in encode_chunks(
            texts, tokenizer=self.tower.tokenizer, runners=self._runners, max_length=self.max_length,
            batch_size=batch_size, max_tokens=max_tokens, chunk_size=chunk_size, prompt=prompt,
            show_progress=show_progress, total=total, stats=stats, description=f"Encoding {side}", output="sparse",
        ):  # fmt: skip
            if not isinstance(chunk, SparseVectors):
                raise TypeError(f"a SPLADE tower produced {type(chunk).__name__}, not sparse vectors")
            yield chunk.pruned(self.config.max_active_dims) if self.config.max_active_dims else chunk

    def _table_chunks(
        self, texts: Iterable[str], prompt: str, chunk_size: int, stats: EncodeStats | None
    ) -> Iterator[SparseVectors]:
        """Queries through the static table, chunk by chunk (no model run)."""
        from retrievekit.models.encoding import check_texts

        assert self.query_table is not None
        iterator, offset = iter(texts), 0
        while chunk := list(itertools.islice(iterator, chunk_size)):
            check_texts(chunk, offset)
            offset += len(chunk)
            if stats is not None:
                stats.texts += len(chunk)
                stats.empty += sum(1 for t in chunk if not t)
            vectors = self.query_table.encode(chunk, prompt)
            yield vectors.pruned(self.config.max_active_dims) if self.config.max_active_dims else vectors

    def similarity(self, queries: SparseVectors, documents: SparseVectors) -> np.ndarray:
        """``(Q, D)`` sparse dot products."""
        return sparse_dot(
            [queries.row(i)[0] for i in range(len(queries))], [queries.row(i)[1] for i in range(len(queries))],
            documents.indptr, documents.indices, documents.values,
        )  # fmt: skip

    def retrained(self, tower: Tower, device: Any = "cpu") -> SparseEncoder:
        """A sparse encoder over ``tower`` (new weights, the same settings; a fresh fingerprint)."""
        return _with_backend(
            tower, self.config, self.name, self.source, None, "torch", str(device), "float32", self.query_table
        )

    # ---- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = True, training: dict | None = None) -> Path:
        """Save in sentence-transformers' ``SparseEncoder`` layout (``SparseEncoder(path)`` loads it;
        an inference-free model as a Router: the static table on the query route, the SPLADE on the
        document route) with retrievekit's manifest; atomic."""
        from retrievekit.models.tower import model_files

        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as staging:
            routed = self.query_table is not None
            transformer = _ROUTED_TRANSFORMER if routed else ""
            pooling = _ROUTED_POOLING if routed else _POOLING_FOLDER
            self._save_splade(staging / transformer, staging / pooling)
            modules = [("MLMTransformer", transformer), ("SpladePooling", pooling)]
            if self.query_table is not None:
                self.query_table.save(staging / _QUERY_TABLE)
                write_json(
                    staging / "router_config.json",
                    {
                        "types": {
                            _QUERY_TABLE: f"{_ST_MODULES}.SparseStaticEmbedding",
                            **{path: f"{_ST_MODULES}.{kind}" for kind, path in modules},
                        },
                        "structure": {"query": [_QUERY_TABLE], "document": [path for _, path in modules]},
                        "parameters": {"default_route": "document", "allow_empty_key": True},
                    },
                )
                entries = [{"idx": 0, "name": "0", "path": "", "type": _ST_ROUTER}]
            else:
                entries = [
                    {"idx": i, "name": str(i), "path": path, "type": f"{_ST_MODULES}.{kind}"}
                    for i, (kind, path) in enumerate(modules)
                ]
            write_json(staging / "modules.json", entries)
            write_json(
                staging / "config_sentence_transformers.json",
                {
                    "model_type": "SparseEncoder",
                    "__version__": {"retrievekit": package_version()},
                    "prompts": {"query": self.config.query_prompt, "document": self.config.document_prompt},
                    "default_prompt_name": None,
                    "similarity_fn_name": "dot",
                    "max_active_dims": self.config.max_active_dims,
                },
            )
            config: dict[str, Any] = {
                "sparse": self.config.to_dict(),
                "vocab_size": self.vocab_size,
                "inference_free": routed,
                "name": self.name,
                "files_digest": files_digest(staging, model_files(staging)),
            }
            if training:
                config["training"] = training
            write_manifest(
                staging, Manifest(kind=SPARSE_KIND, family="sparse", config=config, fingerprint=self.fingerprint)
            )
        logger.info("saved %s to %s", self.name or "SPLADE model", directory)
        return directory

    def _save_splade(self, transformer: Path, pooling: Path) -> None:
        """The masked-LM module (weights, tokenizer, sentence_bert_config.json) and the pooling module."""
        transformer.mkdir(parents=True, exist_ok=True)
        self.tower.backbone.save_pretrained(transformer, safe_serialization=True)
        self.tower.tokenizer.save_pretrained(transformer)
        write_json(
            transformer / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False}
        )
        pooling.mkdir(parents=True, exist_ok=True)
        write_json(
            pooling / "config.json",
            {
                "pooling_strategy": self.config.pooling,
                "activation_function": self.config.activation,
                "word_embedding_dimension": self.vocab_size,
            },
        )


# ---- loading ---------------------------------------------------------------------------------


def _tower(backbone_dir: Path, config: SparseConfig, trust_remote_code: bool) -> Tower:
    from retrievekit.models.heads import DeferredProjection, SpladeHead
    from retrievekit.models.spec import TowerSpec
    from retrievekit.models.tower import Tower, load_backbone

    backbone, tokenizer = load_backbone(backbone_dir, states="masked_lm_logits", trust_remote_code=trust_remote_code)
    model: Any = backbone
    decoder = model.get_output_embeddings()
    deferred = None
    if decoder is not None and getattr(decoder, "weight", None) is not None and decoder.weight.ndim == 2:
        deferred = DeferredProjection(decoder)  # the head projects onto the vocabulary in slices
        model.set_output_embeddings(deferred)
    spec = TowerSpec(backbone="", max_length=config.max_length)
    return Tower(spec, backbone, tokenizer, head=SpladeHead(config.pooling, config.activation, decoder=deferred)).eval()


def _read_folder(root: Path, trust_remote_code: bool) -> tuple[Tower, SparseConfig, str | None, QueryTable | None]:
    """The tower, settings, verified fingerprint and static query table (inference-free models) of a
    retrievekit, sentence-transformers or plain masked-LM folder."""
    from retrievekit.models.loading import verified_fingerprint

    layout = read_sparse_layout(root)
    config, fingerprint = layout.config, None
    if (root / "manifest.json").is_file():
        manifest = read_manifest(root, expected_kind=SPARSE_KIND)
        fingerprint = verified_fingerprint(root, manifest)
        raw = manifest.config.get("sparse")
        if not isinstance(raw, dict):
            raise ArtifactError(f"{root / 'manifest.json'}: no 'sparse' settings")
        config = SparseConfig.from_dict(raw, str(root / "manifest.json"))
    table = None
    if layout.query_table is not None:
        table = QueryTable.load(layout.query_table, trust_remote_code=trust_remote_code)
    return _tower(layout.backbone, config, trust_remote_code), config, fingerprint, table


def load_sparse_encoder(
    name_or_path: str | Path,
    *,
    max_active_dims: int | None = None,
    max_length: int | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> SparseEncoder:
    """Load a SPLADE model: a folder saved by retrievekit or sentence-transformers (``SparseEncoder``;
    an inference-free Router reads queries with its static table), or a plain Hugging Face
    masked-LM folder (max pooling, relu: SPLADE's defaults).

    ``max_active_dims`` and ``max_length`` override the folder's settings. ``backend``: ``torch``
    (``device``, ``dtype`` as for dense encoders)."""
    root = resolve_model(name_or_path)
    tower, config, fingerprint, table = _read_folder(root, trust_remote_code)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (("max_active_dims", max_active_dims), ("max_length", max_length))
        if value is not None and getattr(config, key) != value
    }
    if overrides:
        config = replace(config, **overrides)
        tower.spec = replace(tower.spec, max_length=config.max_length)
        fingerprint = None
    return _with_backend(tower, config, str(name_or_path), root, fingerprint, backend, device, dtype, table)


def _with_backend(
    tower: Tower,
    config: SparseConfig,
    name: str,
    root: Path | None,
    fingerprint: str | None,
    backend: str,
    device: str | list[str] | None,
    dtype: str,
    query_table: QueryTable | None = None,
) -> SparseEncoder:
    if backend != "torch":
        raise ConfigError(
            f"backend {backend!r} is not available for SPLADE models; use 'torch'. The vocabulary projection and "
            "pooling, most of the time, run in torch whatever runs the transformer (measured in benchmarks/README.md)"
        )
    return SparseEncoder(
        tower, config, runners=torch_runners(tower, device, dtype), name=name, source=root,
        runtime=f"torch-{dtype}", fingerprint=fingerprint, query_table=query_table,
    )  # fmt: skip
