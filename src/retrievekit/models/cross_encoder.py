"""Cross-encoders: a sequence-classification model reads a query and a document together and scores the pair.

A :class:`CrossEncoder` is a tower with the pair-score head (:class:`~retrievekit.models.heads.ScoreHead`)
run by the shared encoding engine on pairs (query first, ``longest_first`` truncation, truncations
counted and reported, pairs batched by length). :meth:`CrossEncoder.predict` applies the model's
activation in float32 after the model (whatever precision it ran in) and equals
sentence-transformers' ``CrossEncoder.predict`` for the same folder; :meth:`CrossEncoder.compute_score`
gives FlagEmbedding's raw scores (``normalize=True``: through a sigmoid, as ``FlagReranker`` does).
:func:`load_cross_encoder` reads sentence-transformers CrossEncoder saves and Hugging Face
sequence-classification folders (bge-reranker style); :meth:`CrossEncoder.save` writes the layout
sentence-transformers 5 and 6 both load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrievekit.artifacts import Manifest, atomic_directory, files_digest, read_manifest, write_manifest
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.cross_encoder_format import (
    CROSS_ENCODER_KIND,
    ST_ACTIVATION_NAMES,
    CrossEncoderConfig,
    read_cross_encoder,
)
from retrievekit.models.encoding import EncodeStats, encode_pair_chunks
from retrievekit.models.single_tower import (
    SingleTowerEncoder,
    attach_backend,
    torch_runners,
    write_json,
)
from retrievekit.resolve import resolve_model

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["CrossEncoder", "activate", "build_cross_encoder", "load_cross_encoder", "load_reranker"]

logger = logging.getLogger(__name__)

_ST_LAYOUT_VERSION = "4.0.0"


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``activation`` of float32 logits (``(n,)`` or ``(n, labels)``; softmax over the labels).

    >>> [round(float(x), 4) for x in activate(np.array([0.0, 2.0]), "sigmoid")]
    [0.5, 0.8808]
    >>> activate(np.array([[0.0, 0.0]]), "softmax").tolist()
    [[0.5, 0.5]]
    """
    logits = np.asarray(logits, dtype=np.float32)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    if activation == "tanh":
        return np.tanh(logits).astype(np.float32)
    if activation == "softmax":
        if logits.ndim == 1:
            return np.ones_like(logits)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    if activation == "identity":
        return logits
    raise ConfigError(f"unknown activation {activation!r}")


class CrossEncoder(SingleTowerEncoder):
    """A cross-encoder: :meth:`predict` scores ``(query, document)`` pairs, :meth:`rank` orders
    documents for a query. Build one with :func:`load_cross_encoder`."""

    family = "cross_encoder"
    kind = CROSS_ENCODER_KIND
    config: CrossEncoderConfig

    @property
    def num_labels(self) -> int:
        return int(self.tower.backbone.config.num_labels)

    @property
    def max_length(self) -> int:
        """Tokens per pair at most (``max_length``, or the tokenizer's and positions' limit)."""
        return self.tower.max_length

    def load_options(self) -> dict[str, object]:
        return {"max_length": self.config.max_length, "activation": self.config.activation}

    def __repr__(self) -> str:
        return (
            f"CrossEncoder({self.name!r}, labels={self.num_labels}, activation={self.config.activation!r}, "
            f"max_length={self.max_length}, backend={self.runtime!r})"
        )

    def logit_chunks(
        self, pairs: Iterable[tuple[str, str]], *, batch_size: int = 32, max_tokens: int | None = None,
        chunk_size: int = 8192, show_progress: bool = False, total: int | None = None,
        stats: EncodeStats | None = None,
    ) -> Iterator[np.ndarray]:  # fmt: skip
        """The model's float32 logits of ``pairs``, chunk by chunk, in input order."""
        for chunk in encode_pair_chunks(
            pairs, tokenizer=self.tower.tokenizer, runners=self._runners, max_length=self.max_length,
            batch_size=batch_size, truncation=self.config.truncation, max_tokens=max_tokens, chunk_size=chunk_size,
            show_progress=show_progress, total=total, stats=stats, description="Scoring pairs",
        ):  # fmt: skip
            yield np.asarray(chunk, dtype=np.float32)

    def logits(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """``(n,)`` logits for one label, ``(n, labels)`` otherwise; truncated pairs are reported."""
        given: Any = pairs
        if isinstance(given, tuple) and len(given) == 2 and all(isinstance(t, str) for t in given):
            given = [given]  # one pair, as sentence-transformers and FlagEmbedding accept it
        pairs = list(given)
        stats = EncodeStats()
        chunks = list(
            self.logit_chunks(pairs, batch_size=batch_size, show_progress=show_progress, total=len(pairs), stats=stats)
        )
        if stats.truncated:
            logger.warning(
                "%d of %d pairs were longer than max_length=%d tokens and were truncated (%s)",
                stats.truncated, stats.texts, self.max_length, self.config.truncation,
            )  # fmt: skip
        if not chunks:
            return np.empty((0,) if self.num_labels == 1 else (0, self.num_labels), dtype=np.float32)
        return np.concatenate(chunks)

    def predict(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, activation: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """Scores of ``pairs`` through the model's activation (or ``activation``), in float32:
        sentence-transformers' ``CrossEncoder.predict``."""
        return activate(self.logits(pairs, batch_size=batch_size, show_progress=show_progress),
                        activation or self.config.activation)  # fmt: skip

    def compute_score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, normalize: bool = False
    ) -> np.ndarray:
        """FlagEmbedding's ``FlagReranker.compute_score``: raw logits, through a sigmoid with ``normalize``."""
        logits = self.logits(pairs, batch_size=batch_size)
        return activate(logits, "sigmoid") if normalize else logits

    def rank(
        self, query: str, documents: Sequence[str], *, top_k: int | None = None, batch_size: int = 32
    ) -> list[tuple[int, float]]:
        """``(document position, score)`` best first (sentence-transformers' ``CrossEncoder.rank``)."""
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        if scores.ndim != 1:
            raise ConfigError(f"ranking needs one score per pair; this model has {self.num_labels} labels")
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(int(i), float(scores[i])) for i in order]

    def retrained(self, tower: Tower, device: Any = "cpu") -> CrossEncoder:
        """A cross-encoder over ``tower`` (new weights, the same settings; a fresh fingerprint)."""
        return CrossEncoder(
            tower, self.config, runners=torch_runners(tower, str(device), "float32"), name=self.name,
            source=self.source, runtime="torch-float32",
        )  # fmt: skip

    def save(self, directory: str | Path, *, overwrite: bool = True, training: dict | None = None) -> Path:
        """Save in sentence-transformers' CrossEncoder layout (version 5 and 6 load it) with
        retrievekit's manifest; atomic."""
        from retrievekit.models.tower import model_files

        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as staging:
            self.tower.backbone.save_pretrained(staging, safe_serialization=True)
            self.tower.tokenizer.save_pretrained(staging)
            config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
            config["sentence_transformers"] = {
                "activation_fn": ST_ACTIVATION_NAMES[self.config.activation],
                # the sentence-transformers version whose layout this is: version 5 parses and compares it
                "version": _ST_LAYOUT_VERSION,
            }
            write_json(staging / "config.json", config)
            manifest: dict[str, Any] = {
                "cross_encoder": self.config.to_dict(),
                "name": self.name,
                "files_digest": files_digest(staging, model_files(staging)),
            }
            if training:
                manifest["training"] = training
            write_manifest(
                staging,
                Manifest(
                    kind=CROSS_ENCODER_KIND, family="cross_encoder", config=manifest, fingerprint=self.fingerprint
                ),
            )
        logger.info("saved %s to %s", self.name or "cross-encoder", directory)
        return directory


def load_reranker(
    name_or_path: str | Path, *, backend: str = "torch", device: str | list[str] | None = None,
    dtype: str = "float32", max_length: int | None = None, trust_remote_code: bool = False,
    quantize: str | None = "int8",
) -> Any:  # fmt: skip
    """A reranker by what its folder holds: a cross-encoder (sentence-transformers CrossEncoder,
    sequence-classification folder) or a decoder-only LLM reranker (a causal LM folder).
    ``quantize``: a cross-encoder's onnx weights (LLM rerankers run on torch)."""
    from retrievekit.models.registry import detect_model_kind

    kind = detect_model_kind(resolve_model(name_or_path))
    options: dict[str, Any] = {
        "backend": backend,
        "device": device,
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
    }
    if kind == "llm_reranker":
        from retrievekit.models.llm_reranker import load_llm_reranker

        return load_llm_reranker(name_or_path, max_length=max_length, **options)
    if kind != CROSS_ENCODER_KIND:
        raise ConfigError(
            f"{name_or_path}: a {kind.replace('_', ' ')} is not a reranker; give a cross-encoder (CrossEncoder or "
            "sequence-classification folder) or a causal LM folder"
        )
    return load_cross_encoder(name_or_path, max_length=max_length, quantize=quantize, **options)


def build_cross_encoder(
    name_or_path: str | Path,
    *,
    num_labels: int = 1,
    seed: int = 0,
    max_length: int | None = None,
    device: str | list[str] | None = None,
    trust_remote_code: bool = False,
) -> CrossEncoder:
    """A new cross-encoder from any encoder (a sentence-transformers or Hugging Face folder, 'minilm'):
    its transformer under a new classification head of ``num_labels`` outputs, initialised from
    ``seed`` (how sentence-transformers' ``CrossEncoder(path, num_labels=1)`` starts from a plain
    encoder). Train it before use."""
    import torch

    from retrievekit.models.heads import ScoreHead
    from retrievekit.models.spec import TowerSpec, spec_from_sentence_transformers
    from retrievekit.models.tower import Tower, load_backbone

    root = resolve_model(name_or_path)
    backbone_dir = root
    if (root / "modules.json").is_file():
        backbone_dir = root / spec_from_sentence_transformers(root).document.backbone
    torch.manual_seed(seed)  # the new head's weights
    backbone, tokenizer = load_backbone(
        backbone_dir, states="classification_logits", trust_remote_code=trust_remote_code, num_labels=num_labels
    )
    config = CrossEncoderConfig(activation="sigmoid" if num_labels == 1 else "identity", max_length=max_length)
    tower = Tower(TowerSpec(backbone="", max_length=max_length), backbone, tokenizer, head=ScoreHead()).eval()
    return CrossEncoder(
        tower, config, runners=torch_runners(tower, device, "float32"), name=str(name_or_path), source=root,
        runtime="torch-float32",
    )  # fmt: skip


def load_cross_encoder(
    name_or_path: str | Path,
    *,
    max_length: int | None = None,
    activation: str | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    quantize: str | None = "int8",
    trust_remote_code: bool = False,
) -> CrossEncoder:
    """Load a cross-encoder: a sentence-transformers CrossEncoder save, a Hugging Face
    sequence-classification folder, or one saved by retrievekit. ``max_length`` and ``activation``
    override the folder's settings; ``backend``: ``torch`` (``dtype`` ``float16`` / ``bfloat16`` on
    GPUs changes how the model runs, never the float32 activation after it) or ``onnx`` (CPU, the
    graph reads the pairs' segment ids; ``quantize="int8"`` or ``None``)."""
    from retrievekit.models.heads import ScoreHead
    from retrievekit.models.loading import verified_fingerprint
    from retrievekit.models.spec import TowerSpec
    from retrievekit.models.tower import Tower, load_backbone

    root = resolve_model(name_or_path)
    fingerprint = None
    if (root / "manifest.json").is_file():
        manifest = read_manifest(root, expected_kind=CROSS_ENCODER_KIND)
        fingerprint = verified_fingerprint(root, manifest)
        raw = manifest.config.get("cross_encoder")
        if not isinstance(raw, dict):
            raise ArtifactError(f"{root / 'manifest.json'}: no 'cross_encoder' settings")
        config = CrossEncoderConfig.from_dict(raw, str(root / "manifest.json"))
    else:
        config = read_cross_encoder(root, activation)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (("max_length", max_length), ("activation", activation))
        if value is not None and getattr(config, key) != value
    }
    if overrides:
        config = replace(config, **overrides)
        fingerprint = None
    backbone, tokenizer = load_backbone(root, states="classification_logits", trust_remote_code=trust_remote_code)
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if config.max_length is not None and positions and config.max_length > positions:
        raise ConfigError(
            f"max_length {config.max_length} is more than the {positions} positions of {name_or_path}; pairs are "
            "never cut silently to fit, so ask for at most that"
        )
    tower = Tower(TowerSpec(backbone="", max_length=config.max_length), backbone, tokenizer, head=ScoreHead()).eval()
    encoder = CrossEncoder(tower, config, runners=[], name=str(name_or_path), source=root, fingerprint=fingerprint)
    attach_backend(encoder, backend=backend, device=device, dtype=dtype, quantize=quantize)
    return encoder
