"""ColBERT (late interaction): one vector per token, queries scored against documents by MaxSim.

A :class:`ColbertEncoder` is a tower with the per-token head (:class:`TokenVectorsHead`: a linear
projection, 128 wide by default, then L2 normalisation) run by the shared encoding engine, with
ColBERT's token layout (:class:`~retrievekit.models.encoding.TokenLayout`): a marker after
``[CLS]`` (``[Q] ``/``[D] `` as PyLate adds them, ``[unused0]``/``[unused1]`` in Stanford
checkpoints), queries padded to ``query_length`` with ``[MASK]`` (their vectors kept), documents cut
to ``document_length`` with the vectors of punctuation dropped. The outputs equal PyLate's
``ColBERT.encode`` for the same model.

Load PyLate or Stanford folders with :func:`load_colbert`, build a new one from any encoder with
:func:`build_colbert`; :meth:`ColbertEncoder.save` writes PyLate's layout (plus retrievekit's
manifest), which ``pylate.models.ColBERT(path)`` loads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from retrievekit.artifacts import (
    Manifest,
    atomic_directory,
    files_digest,
    read_manifest,
    write_manifest,
)
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.colbert_format import (
    COLBERT_KIND,
    ColbertConfig,
    pylate_modules,
    read_pylate_config,
    read_stanford_config,
)
from retrievekit.models.encoding import EncodeStats, TokenLayout, encode_chunks
from retrievekit.models.single_tower import SingleTowerEncoder, attach_backend, package_version, write_json
from retrievekit.outputs import MultiVectors
from retrievekit.resolve import resolve_model
from retrievekit.scoring import maxsim_ragged

if TYPE_CHECKING:
    from retrievekit.models.tower import Tower

__all__ = ["ColbertConfig", "ColbertEncoder", "build_colbert", "load_colbert"]

logger = logging.getLogger(__name__)

_DENSE_FOLDER = "1_Dense"
_IDENTITY = "torch.nn.modules.linear.Identity"


class ColbertEncoder(SingleTowerEncoder):
    """A ColBERT model: ``encode_queries``/``encode_documents`` give one vector per kept token
    (:class:`~retrievekit.outputs.MultiVectors`); :meth:`similarity` scores them by MaxSim.

    Build one with :func:`load_colbert` or :func:`build_colbert`.
    """

    family = "multivector"
    similarity_fn_name = "maxsim"
    kind = COLBERT_KIND
    config: ColbertConfig

    def __init__(self, tower: Tower, config: ColbertConfig, **options: Any) -> None:
        super().__init__(tower, config, **options)
        self._lengths = {side: self._capped_length(side) for side in ("queries", "documents")}
        self._layouts = {side: self._layout(side) for side in ("queries", "documents")}

    @property
    def dimension(self) -> int:
        return self.tower.dimension

    @property
    def max_length(self) -> int:
        """Tokens per document at most (``document_length``, capped at the model's positions)."""
        return self._lengths["documents"]

    def load_options(self) -> dict[str, object]:
        """The :func:`load_colbert` options that rebuild this encoder from its source folder."""
        return {
            "query_length": self.config.query_length,
            "document_length": self.config.document_length,
            "attend_to_expansion_tokens": self.config.attend_to_expansion_tokens,
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"ColbertEncoder({self.name!r}, dim={self.dimension}, query_length={c.query_length}, "
            f"document_length={c.document_length}, markers=({c.query_prefix!r}, {c.document_prefix!r}), "
            f"backend={self.backend})"
        )

    # ---- token layout ------------------------------------------------------------------------
    def _token_id(self, token: str, what: str) -> int:
        tokenizer = self.tower.tokenizer
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise ConfigError(
                f"the {what} {token!r} is not a token of this model's tokenizer; build the model with "
                "build_colbert (which adds the markers) or set the marker to one the vocabulary has"
            )
        return int(token_id)

    def _expansion_id(self) -> int:
        tokenizer = self.tower.tokenizer
        for candidate in (tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
            if candidate is not None:
                return int(candidate)
        raise ConfigError("query expansion needs a [MASK], end-of-sequence or padding token; this tokenizer has none")

    def _layout(self, side: str) -> TokenLayout:
        c = self.config
        if side == "queries":
            marker = self._token_id(c.query_prefix, "query marker") if c.query_prefix else None
            if not c.do_query_expansion:
                return TokenLayout(marker_id=marker)
            return TokenLayout(
                marker_id=marker,
                expand_to=self._lengths["queries"],
                expand_id=self._expansion_id(),
                attend_expansion=c.attend_to_expansion_tokens,
            )
        marker = self._token_id(c.document_prefix, "document marker") if c.document_prefix else None
        # as PyLate: each word through convert_tokens_to_ids, so a word missing from the vocabulary
        # puts the unknown token on the list (its vectors are dropped too)
        convert = self.tower.tokenizer.convert_tokens_to_ids
        skip = sorted({int(i) for i in (convert(w) for w in c.skiplist_words) if i is not None})
        return TokenLayout(marker_id=marker, skip_ids=tuple(skip))

    # ---- encoding ----------------------------------------------------------------------------
    @overload
    def encode_queries(  # type: ignore[overload-overlap]
        self, texts: str, *, batch_size: int = ..., max_tokens: int | None = ..., show_progress: bool = ...
    ) -> np.ndarray: ...

    @overload
    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = ..., max_tokens: int | None = ..., show_progress: bool = ...
    ) -> MultiVectors: ...

    def encode_queries(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> MultiVectors | np.ndarray:  # fmt: skip
        """Encode queries: ``query_length`` vectors each with query expansion (the real tokens'
        otherwise). A single string gives one ``(tokens, dim)`` array."""
        return self._encode(texts, "queries", batch_size, max_tokens, show_progress)

    @overload
    def encode_documents(  # type: ignore[overload-overlap]
        self, texts: str, *, batch_size: int = ..., max_tokens: int | None = ..., show_progress: bool = ...
    ) -> np.ndarray: ...

    @overload
    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = ..., max_tokens: int | None = ..., show_progress: bool = ...
    ) -> MultiVectors: ...

    def encode_documents(
        self, texts: str | Sequence[str], *, batch_size: int = 32, max_tokens: int | None = None,
        show_progress: bool = False,
    ) -> MultiVectors | np.ndarray:  # fmt: skip
        """Encode documents: one vector per token but punctuation. A single string gives one array."""
        return self._encode(texts, "documents", batch_size, max_tokens, show_progress)

    def encode_query(self, texts: str | Sequence[str], **options: Any) -> MultiVectors | np.ndarray:
        """sentence-transformers' name for :meth:`encode_queries`."""
        return self.encode_queries(texts, **options)

    def encode_document(self, texts: str | Sequence[str], **options: Any) -> MultiVectors | np.ndarray:
        """sentence-transformers' name for :meth:`encode_documents`."""
        return self.encode_documents(texts, **options)

    def _encode(
        self, texts: str | Sequence[str], side: str, batch_size: int, max_tokens: int | None, show_progress: bool
    ) -> MultiVectors | np.ndarray:
        if isinstance(texts, str):
            return self._encode([texts], side, batch_size, max_tokens, show_progress)[0]
        stats = EncodeStats()
        chunks = list(
            self.encode_chunks(
                texts, side, batch_size=batch_size, max_tokens=max_tokens, show_progress=show_progress,
                total=len(texts), stats=stats,
            )
        )  # fmt: skip
        stats.report(self.token_length(side))
        return MultiVectors.concatenate(chunks) if chunks else MultiVectors.from_list([], self.dimension)

    def token_length(self, side: str) -> int:
        """Tokens per query (``queries``) or at most per document (``documents``), markers included."""
        return self._lengths[side]

    def token_layout(self, side: str) -> TokenLayout:
        """ColBERT's token layout for ``side`` (what training collators tokenise with too)."""
        return self._layouts[side]

    def retrained(self, tower: Tower, device: Any = "cpu") -> ColbertEncoder:
        """A ColBERT encoder over ``tower`` (new weights, the same settings; a fresh fingerprint)."""
        return _with_backend(tower, self.config, self.name, self.source, None, "torch", str(device), "float32", None)

    def _capped_length(self, side: str) -> int:
        """The configured length, capped (with a warning) at the backbone's position embeddings."""
        length = self.config.query_length if side == "queries" else self.config.document_length
        positions = getattr(self.tower.backbone.config, "max_position_embeddings", None)
        if isinstance(positions, int) and length > positions:
            name = "query_length" if side == "queries" else "document_length"
            logger.warning("%s=%d is more than the model's %d positions; using %d", name, length, positions, positions)
            return positions
        return length

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
    ) -> Iterator[MultiVectors]:
        """Encode ``side`` (``queries`` or ``documents``) chunk by chunk, for streams of any length."""
        if side not in self._layouts:
            raise ConfigError(f"side must be 'queries' or 'documents', got {side!r}")
        prompt = self.config.query_prompt if side == "queries" else self.config.document_prompt
        for chunk in encode_chunks(
            texts, tokenizer=self.tower.tokenizer, runners=self._runners, max_length=self.token_length(side),
            batch_size=batch_size, max_tokens=max_tokens, chunk_size=chunk_size, prompt=prompt,
            show_progress=show_progress, total=total, stats=stats, description=f"Encoding {side}",
            output="multivector", layout=self._layouts[side],
        ):  # fmt: skip
            if not isinstance(chunk, MultiVectors):
                raise TypeError(f"a ColBERT tower produced {type(chunk).__name__}, not per-token vectors")
            yield chunk

    def similarity(self, queries: Any, documents: Any) -> np.ndarray:
        """``(Q, D)`` MaxSim scores of every query against every document (``MultiVectors``, lists of
        ``(tokens, dim)`` arrays, or single arrays)."""
        query_rows, document_rows = _rows(queries), _rows(documents)
        if not query_rows:
            return np.zeros((0, len(document_rows)), dtype=np.float32)
        return np.stack([maxsim_ragged(q, document_rows) for q in query_rows]).astype(np.float32, copy=False)

    # ---- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = True, training: dict | None = None) -> Path:
        """Save in PyLate's layout (``pylate.models.ColBERT(path)`` loads it) with retrievekit's
        manifest; atomic."""
        from safetensors.torch import save_file

        from retrievekit.models.tower import model_files

        directory = Path(directory)
        projection: Any = getattr(self.tower.head, "projection", None)
        with atomic_directory(directory, overwrite=overwrite) as staging:
            self.tower.backbone.save_pretrained(staging, safe_serialization=True)
            self.tower.tokenizer.save_pretrained(staging)
            write_json(
                staging / "sentence_bert_config.json",
                {"max_seq_length": self.config.document_length - 1, "do_lower_case": False},
            )
            modules: list[dict[str, Any]] = [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
            ]
            if projection is not None:
                dense = staging / _DENSE_FOLDER
                dense.mkdir()
                write_json(
                    dense / "config.json",
                    {
                        "in_features": int(projection.in_features),
                        "out_features": int(projection.out_features),
                        "bias": projection.bias is not None,
                        "activation_function": _IDENTITY,
                        "use_residual": False,
                    },
                )
                tensors = {"linear.weight": projection.weight.detach().cpu().contiguous()}
                if projection.bias is not None:
                    tensors["linear.bias"] = projection.bias.detach().cpu().contiguous()
                save_file(tensors, str(dense / "model.safetensors"))
                modules.append({"idx": 1, "name": "1", "path": _DENSE_FOLDER, "type": "pylate.models.Dense.Dense"})
            write_json(staging / "modules.json", modules)
            write_json(
                staging / "config_sentence_transformers.json",
                {"__version__": {"retrievekit": package_version()}, **self.config.to_pylate()},
            )
            config: dict[str, Any] = {
                "colbert": self.config.to_dict(),
                "dimension": self.dimension,
                "name": self.name,
                "files_digest": files_digest(staging, model_files(staging)),
            }
            if training:
                config["training"] = training
            write_manifest(
                staging, Manifest(kind=COLBERT_KIND, family="multivector", config=config, fingerprint=self.fingerprint)
            )
        logger.info("saved %s to %s", self.name or "ColBERT model", directory)
        return directory


def _rows(value: Any) -> list[np.ndarray]:
    if isinstance(value, MultiVectors):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return [value]
    return [np.asarray(v, dtype=np.float32) for v in value]


# ---- loading ---------------------------------------------------------------------------------


def _linear(weight: Any, bias: Any = None) -> Any:
    import torch
    from torch import nn

    layer = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _read_dense(folder: Path) -> Any:
    """PyLate's (or sentence-transformers') Dense module: a linear map, no activation."""
    from safetensors.torch import load_file

    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{config_path}: cannot read the projection's config ({exc})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{config_path}: not a JSON object")
    activation = config.get("activation_function", _IDENTITY)
    if activation != _IDENTITY:
        raise ArtifactError(f"{config_path}: activation {activation!r} is not supported (PyLate's Identity only)")
    if config.get("use_residual"):
        raise ArtifactError(f"{config_path}: use_residual projections are not supported")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{folder}: no model.safetensors for the projection (pickled weights are never read)")
    state = load_file(str(weights))
    if "linear.weight" not in state:
        raise ArtifactError(f"{weights}: no linear.weight tensor")
    weight = state["linear.weight"]
    expected = (config.get("out_features"), config.get("in_features"))
    if weight.ndim != 2 or tuple(weight.shape) != expected:
        raise ArtifactError(f"{weights}: linear.weight is {tuple(weight.shape)}, the config says {expected}")
    return _linear(weight, state.get("linear.bias"))


def _stanford_linear(root: Path) -> Any:
    from safetensors import safe_open

    for path in sorted(root.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            if "linear.weight" in weights.keys():  # noqa: SIM118 (safe_open has no __contains__)
                return _linear(weights.get_tensor("linear.weight"))
    raise ArtifactError(f"{root}: a Stanford ColBERT checkpoint without linear.weight in its safetensors files")


def _tower(root: Path, projection: Any, config: ColbertConfig, trust_remote_code: bool) -> Tower:
    from retrievekit.models.heads import TokenVectorsHead
    from retrievekit.models.spec import TowerSpec
    from retrievekit.models.tower import Tower, load_backbone

    backbone, tokenizer = load_backbone(root, trust_remote_code=trust_remote_code)
    model: Any = backbone  # a transformers model
    hidden = int(model.config.hidden_size)
    if projection is not None and int(projection.in_features) != hidden:
        raise ArtifactError(
            f"{root}: the projection takes {projection.in_features} inputs, the backbone gives {hidden}"
        )
    spec = TowerSpec(backbone="", max_length=config.document_length)
    return Tower(spec, backbone, tokenizer, head=TokenVectorsHead(projection)).eval()


def _read_folder(root: Path, trust_remote_code: bool) -> tuple[Tower, ColbertConfig, str | None]:
    """The tower, settings and verified fingerprint of a retrievekit, PyLate or Stanford folder."""
    from retrievekit.models.loading import verified_fingerprint

    if (root / "manifest.json").is_file():
        manifest = read_manifest(root, expected_kind=COLBERT_KIND)
        fingerprint = verified_fingerprint(root, manifest)
        raw = manifest.config.get("colbert")
        if not isinstance(raw, dict):
            raise ArtifactError(f"{root / 'manifest.json'}: no 'colbert' settings")
        config = ColbertConfig.from_dict(raw, str(root / "manifest.json"))
        projection = _read_dense(root / _DENSE_FOLDER) if (root / _DENSE_FOLDER).is_dir() else None
        return _tower(root, projection, config, trust_remote_code), config, fingerprint
    modules = pylate_modules(root)
    if modules is not None:
        transformer = [path for kind, path in modules if kind.endswith(".Transformer")]
        dense = [path for kind, path in modules if kind.endswith(".Dense")]
        others = [kind for kind, _ in modules if not kind.endswith((".Transformer", ".Dense"))]
        if transformer != [""] or others or len(dense) > 1:
            raise ArtifactError(
                f"{root / 'modules.json'}: expected a Transformer at the root and at most one Dense module "
                f"(found {[kind for kind, _ in modules]})"
            )
        projection = _read_dense(root / dense[0]) if dense else None
        config = read_pylate_config(root)
        return _tower(root, projection, config, trust_remote_code), config, None
    config = read_stanford_config(root)
    return _tower(root, _stanford_linear(root), config, trust_remote_code), config, None


def load_colbert(
    name_or_path: str | Path,
    *,
    query_length: int | None = None,
    document_length: int | None = None,
    attend_to_expansion_tokens: bool | None = None,
    backend: str = "torch",
    device: str | list[str] | None = None,
    dtype: str = "float32",
    quantize: str | None = "int8",
    trust_remote_code: bool = False,
) -> ColbertEncoder:
    """Load a ColBERT model: a folder saved by retrievekit or PyLate, or a Stanford ColBERT checkpoint.

    ``query_length``, ``document_length`` and ``attend_to_expansion_tokens`` override the folder's
    settings (as PyLate's constructor arguments do). ``backend``: ``torch`` (``device``, ``dtype``
    as for dense encoders) or ``onnx`` (CPU; ``quantize="int8"`` or ``None``)."""
    root = resolve_model(name_or_path)
    tower, config, fingerprint = _read_folder(root, trust_remote_code)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("query_length", query_length),
            ("document_length", document_length),
            ("attend_to_expansion_tokens", attend_to_expansion_tokens),
        )
        if value is not None and getattr(config, key) != value
    }
    if overrides:
        config = replace(config, **overrides)
        tower.spec = replace(tower.spec, max_length=config.document_length)
        fingerprint = None
    return _with_backend(tower, config, str(name_or_path), root, fingerprint, backend, device, dtype, quantize)


def _with_backend(
    tower: Tower,
    config: ColbertConfig,
    name: str,
    root: Path | None,
    fingerprint: str | None,
    backend: str,
    device: str | list[str] | None,
    dtype: str,
    quantize: str | None,
) -> ColbertEncoder:
    encoder = ColbertEncoder(tower, config, runners=[], name=name, source=root, fingerprint=fingerprint)
    attach_backend(encoder, backend=backend, device=device, dtype=dtype, quantize=quantize)
    return encoder


def build_colbert(
    base: str | Path,
    *,
    embedding_size: int = 128,
    seed: int = 0,
    config: ColbertConfig | None = None,
    device: str | list[str] | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> ColbertEncoder:
    """A new ColBERT model from any Hugging Face or sentence-transformers encoder, as PyLate builds
    one: the base's transformer (its pooling and other modules left out), the marker tokens added to
    the tokenizer (their embeddings drawn from the existing ones' mean and covariance) and a random
    ``embedding_size``-wide projection without bias, all seeded by ``seed``."""
    import torch

    from retrievekit.models.spec import spec_from_sentence_transformers

    root = resolve_model(base)
    config = config or ColbertConfig()
    backbone_dir = root
    if (root / "modules.json").is_file() and pylate_modules(root) is None:
        backbone_dir = root / spec_from_sentence_transformers(root).document.backbone
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tower = _tower(backbone_dir, None, config, trust_remote_code)
        markers = [m for m in (config.query_prefix, config.document_prefix) if m]
        tokenizer = tower.tokenizer
        missing = [m for m in markers if m not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing)
            tower.backbone.resize_token_embeddings(len(tokenizer))
        hidden = int(tower.backbone.config.hidden_size)
        tower.head.projection = torch.nn.Linear(hidden, embedding_size, bias=False)
    finally:
        torch.random.set_rng_state(generator_state)
    tower.eval()
    return _with_backend(tower, config, f"colbert({base})", None, None, "torch", device, dtype, None)
