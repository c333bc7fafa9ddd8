"""The sentence-transformers files written beside retrievekit's manifest, so either library loads a save."""

from __future__ import annotations

import json
from pathlib import Path

from retrievekit.models.single_tower import package_version
from retrievekit.models.spec import EncoderSpec

__all__ = ["write_sentence_transformers_files"]

_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
    "Router": "sentence_transformers.models.Router",
}


def _module_entries(modules: tuple[tuple[str, str], ...]) -> list[dict[str, object]]:
    return [{"idx": i, "name": str(i), "path": path, "type": _TYPES[kind]} for i, (kind, path) in enumerate(modules)]


def write_sentence_transformers_files(
    root: Path, spec: EncoderSpec, layouts: dict[str, tuple[tuple[str, str], ...]]
) -> None:
    """Write ``modules.json``, ``config_sentence_transformers.json`` and, for two towers, ``router_config.json``.

    ``layouts`` maps ``"shared"`` (one tower) or ``"query"``/``"document"`` to the ordered
    ``(module, folder)`` pairs that :meth:`Tower.save` wrote.
    """
    prompts = {"query": spec.query_prompt, "document": spec.document_prompt}
    st_config = {
        "__version__": {"retrievekit": package_version()},
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": spec.similarity,
    }
    (root / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    if "shared" in layouts:
        (root / "modules.json").write_text(json.dumps(_module_entries(layouts["shared"]), indent=2))
        if (root / "sentence_bert_config.json").exists() is False:
            raise FileNotFoundError("the shared tower's backbone must be saved at the root")
        return
    types: dict[str, str] = {}
    structure: dict[str, list[str]] = {}
    for route in ("query", "document"):
        structure[route] = []
        for kind, path in layouts[route]:
            types[path] = _TYPES[kind]
            structure[route].append(path)
    router = {
        "types": types,
        "structure": structure,
        "parameters": {"default_route": "document", "allow_empty_key": True},
    }
    (root / "router_config.json").write_text(json.dumps(router, indent=2))
    (root / "modules.json").write_text(json.dumps(_module_entries((("Router", ""),)), indent=2))
