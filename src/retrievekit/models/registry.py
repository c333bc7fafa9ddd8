"""Loading any model by what its folder declares: a registry maps each manifest ``kind`` (and each
foreign folder layout) to the family's loader.

Order of dispatch: retrievekit's ``manifest.json`` names its ``kind``; without one, each registered
layout detector is asked in turn (they read JSON files only; nothing in a folder is executed). A new
family registers its kind and layout with :func:`register_model_kind`; nothing else changes. The
loaders are imported only when used, so listing them imports no torch.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from retrievekit.artifacts import MANIFEST_NAME, read_manifest
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.colbert_format import is_colbert_folder
from retrievekit.models.cross_encoder_format import is_cross_encoder_folder
from retrievekit.models.llm_reranker import is_causal_lm_folder
from retrievekit.models.m3_format import is_m3_folder
from retrievekit.models.sparse_format import is_sparse_folder
from retrievekit.resolve import resolve_model

__all__ = ["Model", "ModelKind", "detect_model_kind", "load_model", "model_kinds", "register_model_kind"]


@runtime_checkable
class Model(Protocol):
    """What every loaded model offers: a name, a content fingerprint, and its family."""

    name: str

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class ModelKind:
    """A registered model kind: the manifest ``kind`` it answers to, its family, the loader
    (``"module:function"``, called with the folder and the caller's options) and an optional detector
    of a foreign layout (sentence-transformers, PyLate, Hugging Face, ...) for folders without a manifest.
    ``onnx``: whether the loader runs an onnx backend (and so takes ``quantize``)."""

    kind: str
    family: str
    loader: str
    detect: Callable[[Path], bool] | None = None
    onnx: bool = False


_REGISTRY: dict[str, ModelKind] = {}


def register_model_kind(
    kind: str, loader: str, *, family: str, detect: Callable[[Path], bool] | None = None, onnx: bool = False
) -> ModelKind:
    """Register (or replace) ``kind``. Detectors run in registration order, most specific first:
    register a family whose layout is a special case of another's before that one."""
    if ":" not in loader:
        raise ConfigError(f"a model loader must be 'module:function', got {loader!r}")
    entry = ModelKind(kind, family, loader, detect, onnx)
    _REGISTRY[kind] = entry
    return entry


def model_kinds() -> dict[str, str]:
    """Kind -> family of every registered kind.

    >>> model_kinds()["dense_encoder"]
    'dense'
    """
    return {kind: entry.family for kind, entry in _REGISTRY.items()}


def detect_model_kind(root: Path) -> str:
    """The kind of the model in ``root``: its manifest's, or the first detector's that recognises it."""
    if (root / MANIFEST_NAME).is_file():
        kind = read_manifest(root).kind
        if kind not in _REGISTRY:
            raise ArtifactError(f"{root}: holds a {kind!r}, which is not a model kind ({', '.join(_REGISTRY)})")
        return kind
    for entry in _REGISTRY.values():
        if entry.detect is not None and entry.detect(root):
            return entry.kind
    raise ArtifactError(f"{root}: not a model folder (no manifest.json, modules.json or config.json)")


def load_model(name_or_path: str | Path, **options: Any) -> Any:
    """Load any model: the family object its folder declares (a :class:`~retrievekit.DenseEncoder`
    for dense models, ...). ``options`` go to the family's loader (for dense ones, those of
    :func:`~retrievekit.load_encoder`). ``quantize`` (the onnx weights) reaches only the loaders of
    kinds with an onnx backend; the others refuse ``backend="onnx"`` themselves."""
    root = resolve_model(name_or_path)
    entry = _REGISTRY[detect_model_kind(root)]
    if not entry.onnx:
        options.pop("quantize", None)
    module, function = entry.loader.split(":")
    loader = getattr(importlib.import_module(module), function)
    return loader(name_or_path, **options)  # as the caller named it: names shown and recorded stay theirs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_dense_layout(root: Path) -> bool:
    """A sentence-transformers folder, or a plain Hugging Face encoder folder (pooling then given)."""
    return (root / "modules.json").is_file() or bool(_read_json(root / "config.json"))


# most specific layout first: a PyLate folder is also a sentence-transformers one
register_model_kind(
    "colbert_encoder",
    "retrievekit.models.colbert:load_colbert",
    family="multivector",
    detect=is_colbert_folder,
    onnx=True,
)
register_model_kind("m3_encoder", "retrievekit.models.m3:load_m3", family="m3", detect=is_m3_folder)
register_model_kind(
    "sparse_encoder", "retrievekit.models.sparse:load_sparse_encoder", family="sparse", detect=is_sparse_folder
)
register_model_kind(
    "cross_encoder", "retrievekit.models.cross_encoder:load_cross_encoder", family="cross_encoder",
    detect=is_cross_encoder_folder, onnx=True,
)  # fmt: skip
register_model_kind(
    "llm_reranker", "retrievekit.models.llm_reranker:load_llm_reranker", family="cross_encoder",
    detect=is_causal_lm_folder,
)  # fmt: skip
register_model_kind(
    "dense_encoder", "retrievekit.models.loading:load_encoder", family="dense", detect=_is_dense_layout, onnx=True
)
