"""Learned sparse (SPLADE) model folders: the settings and the layouts retrievekit reads (JSON only,
no torch): sentence-transformers ``SparseEncoder`` folders (an ``MLMTransformer`` then a
``SpladePooling`` module; or, for inference-free models, a ``Router`` whose query route is a
``SparseStaticEmbedding`` table and whose document route is those two) and plain Hugging Face
masked-LM folders (naver's SPLADE checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.folder_json import read_json as _json
from retrievekit.models.folder_json import settings_from_dict

__all__ = ["SPARSE_KIND", "SparseConfig", "SparseLayout", "is_sparse_folder", "read_sparse_layout"]

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
        return settings_from_dict(cls, raw, source)


def _modules(root: Path) -> list[tuple[str, str]] | None:
    entries = _json(root / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return [(str(e.get("type", "")), str(e.get("path", ""))) for e in entries]


def _is_masked_lm(root: Path) -> bool:
    config = _json(root / "config.json")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForMaskedLM") for a in architectures)


@dataclass(frozen=True)
class SparseLayout:
    """Where a SPLADE folder's parts are: the masked-LM ``backbone`` folder, the settings, and the
    folder of an inference-free model's static query table (``None``: queries go through the model too)."""

    backbone: Path
    config: SparseConfig
    query_table: Path | None = None


def _router(root: Path) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """``(types, structure)`` of a sentence-transformers Router folder's ``router_config.json``."""
    config = _json(root / "router_config.json")
    if not isinstance(config, dict):
        return None
    types, structure = config.get("types"), config.get("structure")
    if not isinstance(types, dict) or not isinstance(structure, dict):
        return None
    if not all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in structure.values()):
        return None
    return {str(k): str(v) for k, v in types.items()}, {str(k): list(v) for k, v in structure.items()}


def _inside(root: Path, relative: str, source: Path) -> Path:
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise ArtifactError(f"{source}: the module folder {relative!r} lies outside the model")
    return folder


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
    if modules is None:
        return False
    if len(modules) == 1 and modules[0][0].endswith(".Router"):
        router = _router(root / modules[0][1])
        return router is not None and any(kind.endswith(".SpladePooling") for kind in router[0].values())
    return any(kind.endswith(".SpladePooling") for kind, _ in modules)


def _read_router(root: Path, router_dir: Path) -> tuple[list[tuple[str, str]], Path]:
    """The document route's modules (paths relative to ``root``) and the static query table's folder
    of an inference-free SPLADE Router."""
    source = router_dir / "router_config.json"
    router = _router(router_dir)
    if router is None:
        raise ArtifactError(f"{source}: not a sentence-transformers Router config (types and structure)")
    types, structure = router
    query = next((structure[k] for k in ("query", "queries") if k in structure), None)
    document = next((structure[k] for k in ("document", "documents", "passage", "corpus") if k in structure), None)
    if query is None or document is None:
        raise ArtifactError(f"{source}: expected a query and a document route, found {sorted(structure)}")
    if len(query) != 1 or not types.get(query[0], "").endswith(".SparseStaticEmbedding"):
        raise ArtifactError(
            f"{source}: the query route must be one SparseStaticEmbedding (an inference-free SPLADE); found "
            f"{[types.get(m, '?') for m in query]}"
        )
    relative = router_dir.relative_to(root)
    modules = [(types.get(m, "?"), str(relative / m)) for m in document]
    return modules, _inside(root, str(relative / query[0]), source)


def read_sparse_layout(root: Path) -> SparseLayout:
    """Where the parts of a sentence-transformers ``SparseEncoder`` folder (inference-free ones
    included) or a plain masked-LM folder (SPLADE's defaults: max pooling, relu) are, and its settings."""
    modules = _modules(root)
    if modules is None:
        if not _is_masked_lm(root):
            raise ArtifactError(f"{root}: neither a sentence-transformers SparseEncoder nor a masked-LM folder")
        return SparseLayout(root, SparseConfig())
    query_table = None
    if len(modules) == 1 and modules[0][0].endswith(".Router"):
        modules, query_table = _read_router(root, _inside(root, modules[0][1], root / "modules.json"))
    transformer = [path for kind, path in modules if kind.endswith(".MLMTransformer")]
    pooling = [path for kind, path in modules if kind.endswith(".SpladePooling")]
    others = [kind for kind, _ in modules if not kind.endswith((".MLMTransformer", ".SpladePooling"))]
    if len(transformer) != 1 or len(pooling) != 1 or others:
        raise ArtifactError(
            f"{root / 'modules.json'}: expected one MLMTransformer then one SpladePooling module (found "
            f"{[kind for kind, _ in modules]})"
        )
    backbone = _inside(root, transformer[0], root / "modules.json")
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
    return SparseLayout(backbone, SparseConfig.from_dict(values, str(root / "modules.json")), query_table)
