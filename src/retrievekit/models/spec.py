"""What a dense encoder is made of, as plain data: one spec for every source format.

A sentence-transformers folder, a plain Hugging Face folder with explicit options, and retrievekit's
own saved format are all read into an :class:`EncoderSpec`; one builder turns a spec into towers.
Paths inside a spec are relative to the model directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from retrievekit.errors import ArtifactError, ConfigError

__all__ = [
    "POOLING_MODES",
    "SPAN_POOLING",
    "EncoderSpec",
    "PoolingMode",
    "TowerSpec",
    "spec_from_hf_directory",
    "spec_from_sentence_transformers",
]

# plain names, no torch: the pooling itself is in models/modules/pooling.py
PoolingMode = Literal["cls", "mean", "max", "last_token", "mean_sqrt_len"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)
# the mean of a marked span's tokens (entity linking's mention between its markers; the whole text
# when it has no start marker): set on a loaded model with its markers, not a loading option
SPAN_POOLING = "mention"

# sentence-transformers' pooling names (old boolean keys and new mode strings) to ours
_ST_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "last_token",
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "lasttoken": "last_token",
}
_QUERY_ROUTES = ("query", "queries", "q")
_DOCUMENT_ROUTES = ("document", "documents", "doc", "docs", "passage", "corpus", "candidate", "d")


@dataclass(frozen=True)
class TowerSpec:
    """One encoder tower: backbone folder, pooling, optional projection folders, normalisation."""

    backbone: str = ""
    pooling: str = "mean"
    normalize: bool = False
    max_length: int | None = None
    projections: tuple[str, ...] = ()
    do_lower_case: bool = False
    span_markers: tuple[str, ...] = ()  # with pooling "mention": the start and end marker tokens

    def __post_init__(self) -> None:
        if self.pooling == SPAN_POOLING:
            if len(self.span_markers) != 2 or not all(isinstance(m, str) and m for m in self.span_markers):
                raise ConfigError("pooling 'mention' needs span_markers: a start and an end marker token")
        elif self.pooling not in POOLING_MODES:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLING_MODES)}")
        elif self.span_markers:
            raise ConfigError(f"span_markers apply to pooling 'mention' only, not {self.pooling!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TowerSpec:
        return cls(
            **{
                **raw,
                "projections": tuple(raw.get("projections", ())),
                "span_markers": tuple(raw.get("span_markers", ())),
            }
        )


@dataclass(frozen=True)
class EncoderSpec:
    """A bi-encoder: a query tower and a document tower (the same one when ``shared``), and prompts."""

    query: TowerSpec
    document: TowerSpec
    shared: bool = True
    query_prompt: str = ""
    document_prompt: str = ""
    similarity: str = "cosine"
    source_format: str = "retrievekit"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shared and self.query != self.document:
            raise ConfigError("a shared-tower spec must use the same tower for queries and documents")
        if self.similarity not in ("cosine", "dot"):
            raise ConfigError(f"similarity must be 'cosine' or 'dot', got {self.similarity!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for side in ("query", "document"):
            data[side]["projections"] = list(data[side]["projections"])
            if data[side]["span_markers"]:
                data[side]["span_markers"] = list(data[side]["span_markers"])
            else:  # absent unless used: the configs (and fingerprints) of other models stay as they were
                del data[side]["span_markers"]
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderSpec:
        try:
            return cls(
                query=TowerSpec.from_dict(raw["query"]),
                document=TowerSpec.from_dict(raw["document"]),
                shared=bool(raw.get("shared", True)),
                query_prompt=raw.get("query_prompt", ""),
                document_prompt=raw.get("document_prompt", ""),
                similarity=raw.get("similarity", "cosine"),
                source_format=raw.get("source_format", "retrievekit"),
                extra=raw.get("extra", {}),
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"malformed encoder config in manifest: {exc}") from exc

    def with_towers(self, **changes: Any) -> EncoderSpec:
        """Apply tower-level overrides (pooling, normalize, max_length) to both towers."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        if changes.get("pooling", SPAN_POOLING) != SPAN_POOLING:
            changes.setdefault("span_markers", ())  # another pooling drops the span's markers
        return replace(self, query=replace(self.query, **changes), document=replace(self.document, **changes))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from exc


def _pooling_from_config(path: Path) -> str:
    config = _read_json(path)
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:
        modes = [key for key, on in config.items() if key.startswith("pooling_mode_") and on]
    if config.get("include_prompt", True) is False:
        raise ConfigError(f"{path}: include_prompt=false (prompt tokens left out of pooling) is not supported")
    if len(modes) != 1 or modes[0] not in _ST_POOLING:
        raise ConfigError(
            f"{path}: unsupported pooling {modes}; supported: one of cls, mean, max, mean_sqrt_len, lasttoken"
        )
    return _ST_POOLING[modes[0]]


def _tower_from_modules(root: Path, modules: list[tuple[str, str]]) -> TowerSpec:
    """Build a tower from an ordered list of (class name, relative path) sentence-transformers modules."""
    backbone, pooling, normalize, projections = None, None, False, []
    max_length, lower = None, False
    for kind, rel in modules:
        folder = root / rel
        if kind == "Transformer":
            backbone = rel
            for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (folder / name).is_file():
                    st_config = _read_json(folder / name)
                    max_length = st_config.get("max_seq_length")
                    lower = bool(st_config.get("do_lower_case", False))
        elif kind == "Pooling":
            pooling = _pooling_from_config(folder / "config.json")
        elif kind == "Dense":
            projections.append(rel)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ConfigError(f"{root}: sentence-transformers module {kind!r} is not supported by retrievekit")
    if backbone is None or pooling is None:
        raise ConfigError(f"{root}: a dense encoder needs a Transformer and a Pooling module")
    return TowerSpec(backbone, pooling, normalize, max_length, tuple(projections), lower)


def spec_from_sentence_transformers(root: Path) -> EncoderSpec:
    """Read a sentence-transformers folder (``modules.json``, optionally a Router/Asym) into a spec."""
    entries: Any = _read_json(root / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise ArtifactError(f"{root / 'modules.json'}: expected a list of modules, each with a 'type'")
    modules = [(str(e["type"]).rsplit(".", 1)[-1], str(e.get("path", ""))) for e in entries]
    st_config = (
        _read_json(root / "config_sentence_transformers.json")
        if (root / "config_sentence_transformers.json").is_file()
        else {}
    )
    prompts = st_config.get("prompts") or {}
    query_prompt = prompts.get("query", "")
    document_prompt = next((prompts[k] for k in ("document", "passage", "corpus") if k in prompts), "")
    similarity = {"cosine": "cosine", "dot": "dot", "dot_product": "dot"}.get(
        st_config.get("similarity_fn_name") or "cosine"
    )
    if similarity is None:
        raise ConfigError(
            f"{root}: similarity {st_config.get('similarity_fn_name')!r} is not supported (cosine or dot)"
        )
    common = {
        "query_prompt": query_prompt,
        "document_prompt": document_prompt,
        "similarity": similarity,
        "source_format": "sentence-transformers",
    }
    router = [i for i, (kind, _) in enumerate(modules) if kind in ("Router", "Asym")]
    if not router:
        tower = _tower_from_modules(root, modules)
        return EncoderSpec(tower, tower, shared=True, **common)
    if router != [0]:
        raise ConfigError(f"{root}: a Router is supported only as the first module")
    router_dir = root / modules[0][1]
    config = _read_json(router_dir / "router_config.json")
    types, structure = config["types"], config["structure"]
    tail = modules[1:]

    def route(names: tuple[str, ...]) -> TowerSpec:
        key = next((name for name in names if name in structure), None)
        if key is None:
            raise ConfigError(f"{router_dir}: the Router has no route named one of {names} (found {sorted(structure)})")
        route_modules = [(types[mid].rsplit(".", 1)[-1], str(Path(modules[0][1]) / mid)) for mid in structure[key]]
        return _tower_from_modules(root, [*route_modules, *tail])

    query, document = route(_QUERY_ROUTES), route(_DOCUMENT_ROUTES)
    return EncoderSpec(query, document, shared=query == document, **common)


def spec_from_hf_directory(
    root: Path,
    *,
    pooling: str | None,
    normalize: bool = False,
    max_length: int | None = None,
    query_prompt: str = "",
    document_prompt: str = "",
) -> EncoderSpec:
    """A plain Hugging Face encoder folder with explicit options (nothing is guessed from its name)."""
    if not (root / "config.json").is_file():
        raise ArtifactError(f"{root}: not a Hugging Face model folder (no config.json)")
    if pooling is None:
        raise ConfigError(
            f"{root} is a plain Hugging Face model: say how to pool its tokens with pooling="
            f"{'|'.join(POOLING_MODES)} (BGE: 'cls' with normalize=True; E5/GTE: 'mean')"
        )
    tower = TowerSpec("", pooling, normalize, max_length)
    return EncoderSpec(
        tower, tower, query_prompt=query_prompt, document_prompt=document_prompt, source_format="huggingface"
    )
