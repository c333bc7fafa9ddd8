"""Learned sparse (SPLADE) model folders: the settings and the layouts retrievekit reads (JSON only,
no torch): sentence-transformers ``SparseEncoder`` folders (an ``MLMTransformer`` then a
``SpladePooling`` module) and plain Hugging Face masked-LM folders (naver's SPLADE checkpoints)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from retrievekit.errors import ArtifactError, ConfigError

__all__ = ["SPARSE_KIND", "SparseConfig", "is_sparse_folder", "read_sparse_layout"]

SPARSE_KIND = "sparse_encoder"
_POOLING = ("max", "sum")
_ACTIVATIONS = ("relu", "log1p_relu")
_MAX_LENGTH = 8192


@dataclass(frozen=True)
class SparseConfig:
    """How a SPLADE model turns masked-LM logits into term weights (sentence-transformers' names).

    ``pooling``: ``max`` (SPLADE v2 and later) or ``sum`` over the tokens; ``activation``: ``relu``
    (``log(1 + relu(logit))``) or ``log1p_relu`` (one more ``log1p``, OpenSearch's models);
    ``max_active_dims``: keep only the largest weights of each vector (None: all); ``max_length``:
    tokens read per text (None: the tokenizer's and positions' limit); prompts go before the text.
    """

    pooling: str = "max"
    activation: str = "relu"
    max_active_dims: int | None = None
    max_length: int | None = None
    query_prompt: str = ""
    document_prompt: str = ""

    def __post_init__(self) -> None:
        if self.pooling not in _POOLING:
            raise ConfigError(f"SPLADE pooling must be one of {', '.join(_POOLING)}, got {self.pooling!r}")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"SPLADE activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        for name in ("max_active_dims", "max_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not value >= 1):
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if self.max_length is not None and self.max_length > _MAX_LENGTH:
            raise ConfigError(f"max_length must be at most {_MAX_LENGTH}, got {self.max_length}")
        for name in ("query_prompt", "document_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> SparseConfig:
        """Known keys only; a value of the wrong type is an error naming ``source``."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except ConfigError as exc:
            raise ArtifactError(f"{source}: {exc}") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _modules(root: Path) -> list[tuple[str, str]] | None:
    entries = _json(root / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return [(str(e.get("type", "")), str(e.get("path", ""))) for e in entries]


def _is_masked_lm(root: Path) -> bool:
    config = _json(root / "config.json")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForMaskedLM") for a in architectures)


def is_sparse_folder(root: Path) -> bool:
    """A sentence-transformers ``SparseEncoder`` folder (the model registry's detector). A plain
    masked-LM folder is not claimed: ``bert-base-uncased`` is one too, and may be meant as a dense
    encoder; :func:`~retrievekit.models.sparse.load_sparse_encoder` (or a sparse command) reads it as SPLADE.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "modules.json").write_text('[{"path": "1_SpladePooling", "type": "x.SpladePooling"}]')
    >>> is_sparse_folder(folder)
    True
    """
    modules = _modules(root)
    return modules is not None and any(kind.endswith(".SpladePooling") for kind, _ in modules)


def read_sparse_layout(root: Path) -> tuple[Path, SparseConfig]:
    """The folder holding the masked-LM transformer and the settings of a sentence-transformers
    ``SparseEncoder`` folder or a plain masked-LM folder (SPLADE's defaults: max pooling, relu)."""
    modules = _modules(root)
    if modules is None:
        if not _is_masked_lm(root):
            raise ArtifactError(f"{root}: neither a sentence-transformers SparseEncoder nor a masked-LM folder")
        return root, SparseConfig()
    transformer = [path for kind, path in modules if kind.endswith(".MLMTransformer")]
    pooling = [path for kind, path in modules if kind.endswith(".SpladePooling")]
    others = [kind for kind, _ in modules if not kind.endswith((".MLMTransformer", ".SpladePooling"))]
    if len(transformer) != 1 or len(pooling) != 1 or others:
        raise ArtifactError(
            f"{root / 'modules.json'}: expected one MLMTransformer then one SpladePooling module (found "
            f"{[kind for kind, _ in modules]}); routers and static query tables are not read yet"
        )
    backbone = (root / transformer[0]).resolve()
    if not backbone.is_relative_to(root.resolve()):
        raise ArtifactError(
            f"{root / 'modules.json'}: the transformer folder {transformer[0]!r} lies outside the model"
        )
    values: dict[str, Any] = {}
    path = root / pooling[0] / "config.json"
    raw = _json(path)
    if raw is not None and not isinstance(raw, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    raw = raw or {}
    values["pooling"] = raw.get("pooling_strategy", "max")
    values["activation"] = raw.get("activation_function", "relu")
    st_path = root / "config_sentence_transformers.json"
    st_config = _json(st_path)
    if isinstance(st_config, dict):
        prompts = st_config.get("prompts") or {}
        if isinstance(prompts, dict):
            values["query_prompt"] = prompts.get("query", "") or ""
            values["document_prompt"] = prompts.get("document", prompts.get("passage", "")) or ""
        if st_config.get("max_active_dims") is not None:
            values["max_active_dims"] = st_config["max_active_dims"]
    bert_config = _json(backbone / "sentence_bert_config.json")
    if isinstance(bert_config, dict) and bert_config.get("max_seq_length") is not None:
        values["max_length"] = bert_config["max_seq_length"]
    return backbone, SparseConfig.from_dict(values, str(root / "modules.json"))
