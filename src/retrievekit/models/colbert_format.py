"""ColBERT folders as PyLate and Stanford ColBERT write them, read as data (JSON only, no torch).

PyLate: a sentence-transformers folder whose ``modules.json`` lists a Transformer and PyLate's
``Dense`` (projection per token), with ColBERT's settings (``query_prefix``, ``query_length``, ...) in
``config_sentence_transformers.json``. Stanford ColBERT: a Hugging Face folder whose ``config.json``
names the ``HF_ColBERT`` architecture; the projection (``linear.weight``) sits in the backbone's
weights and the settings in ``artifact.metadata`` (JSON).
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.folder_json import read_json as _json
from retrievekit.models.folder_json import settings_from_dict

__all__ = [
    "COLBERT_KIND",
    "ColbertConfig",
    "is_colbert_folder",
    "pylate_modules",
    "read_pylate_config",
    "read_stanford_config",
]

COLBERT_KIND = "colbert_encoder"
_PYLATE_DENSE = "pylate.models.Dense.Dense"
_MAX_LENGTH = 8192


@dataclass(frozen=True)
class ColbertConfig:
    """How a ColBERT model reads text (PyLate's names and defaults).

    ``query_prefix``/``document_prefix``: the marker token put after ``[CLS]`` (``""``: none);
    ``query_length``: queries are cut to it and, with ``do_query_expansion``, padded to it with
    ``[MASK]`` tokens whose output vectors are kept (attended to only with
    ``attend_to_expansion_tokens``); ``document_length``: documents are cut to it; the vectors of
    ``skiplist_words`` tokens are dropped from documents; prompts are put before the text.
    """

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: tuple[str, ...] = tuple(string.punctuation)
    query_prompt: str = ""
    document_prompt: str = ""

    def __post_init__(self) -> None:
        for name in ("query_length", "document_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 3 <= value <= _MAX_LENGTH:
                raise ConfigError(f"{name} must be an integer from 3 to {_MAX_LENGTH}, got {value!r}")
        for name in ("do_query_expansion", "attend_to_expansion_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("query_prefix", "document_prefix", "query_prompt", "document_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not all(isinstance(word, str) for word in self.skiplist_words):
            raise ConfigError("skiplist_words must be a list of strings")
        if not self.do_query_expansion and self.attend_to_expansion_tokens:
            object.__setattr__(self, "attend_to_expansion_tokens", False)  # as PyLate: nothing to attend to

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["skiplist_words"] = list(self.skiplist_words)
        return values

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> ColbertConfig:
        """Known keys only; a value of the wrong type is an error naming ``source``."""
        values = dict(raw)
        if "skiplist_words" in values:
            if not isinstance(values["skiplist_words"], list):
                raise ArtifactError(f"{source}: skiplist_words must be a list of strings")
            values["skiplist_words"] = tuple(values["skiplist_words"])
        return settings_from_dict(cls, values, source)

    def to_pylate(self) -> dict[str, Any]:
        """The keys PyLate keeps in ``config_sentence_transformers.json``."""
        return {
            "prompts": {"query": self.query_prompt, "document": self.document_prompt},
            "default_prompt_name": None,
            "similarity_fn_name": "MaxSim",
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "query_length": self.query_length,
            "document_length": self.document_length,
            "attend_to_expansion_tokens": self.attend_to_expansion_tokens,
            "skiplist_words": list(self.skiplist_words),
            "do_query_expansion": self.do_query_expansion,
        }


def pylate_modules(root: Path) -> list[tuple[str, str]] | None:
    """``(type, folder)`` of each module in a PyLate folder's ``modules.json``, or None when ``root``
    is not one (no PyLate ``Dense`` module and no ``MaxSim`` similarity)."""
    entries = _json(root / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    modules = [(str(e.get("type", "")), str(e.get("path", ""))) for e in entries]
    st_config = _json(root / "config_sentence_transformers.json")
    maxsim = isinstance(st_config, dict) and st_config.get("similarity_fn_name") == "MaxSim"
    if not maxsim and not any(kind == _PYLATE_DENSE for kind, _ in modules):
        return None
    return modules


def _is_stanford(root: Path) -> bool:
    config = _json(root / "config.json")
    return isinstance(config, dict) and config.get("architectures") == ["HF_ColBERT"]


def is_colbert_folder(root: Path) -> bool:
    """A PyLate or Stanford ColBERT folder (the model registry's detector)."""
    return pylate_modules(root) is not None or _is_stanford(root)


def read_pylate_config(root: Path) -> ColbertConfig:
    """The ColBERT settings of a PyLate folder (PyLate's defaults for keys it does not set)."""
    path = root / "config_sentence_transformers.json"
    raw = _json(path) if path.is_file() else {}
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    prompts = raw.get("prompts") or {}
    values = {k: v for k, v in raw.items() if v is not None}
    if isinstance(prompts, dict):
        values["query_prompt"] = prompts.get("query", "") or ""
        values["document_prompt"] = prompts.get("document", prompts.get("passage", "")) or ""
    return ColbertConfig.from_dict(values, str(path))


def read_stanford_config(root: Path) -> ColbertConfig:
    """The settings of a Stanford ColBERT checkpoint (``artifact.metadata``; its markers default to
    ``[unused0]``/``[unused1]``)."""
    path = root / "artifact.metadata"
    raw = _json(path) if path.is_file() else {}
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    values: dict[str, Any] = {
        "query_prefix": raw.get("query_token_id", "[unused0]"),
        "document_prefix": raw.get("doc_token_id", "[unused1]"),
    }
    for ours, theirs in (
        ("query_length", "query_maxlen"),
        ("document_length", "doc_maxlen"),
        ("attend_to_expansion_tokens", "attend_to_mask_tokens"),
    ):
        if raw.get(theirs) is not None:
            values[ours] = raw[theirs]
    if raw.get("mask_punctuation") is False:
        values["skiplist_words"] = []
    return ColbertConfig.from_dict(values, str(path))
