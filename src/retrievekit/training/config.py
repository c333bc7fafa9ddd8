"""Training configuration: one small dataclass per component, composed into :class:`TrainConfig`.

A YAML file has one section per component (``model``, ``data``, ``loss``, ``optimizer``, ``run``,
``evaluation``); every field is also a command-line flag of the same name (``--batch-size``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrievekit._optional import require
from retrievekit.errors import ConfigError

__all__ = [
    "DataConfig",
    "EvaluationConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "config_fields",
    "load_config",
]


@dataclass
class ModelConfig:
    """``model``: name or folder to start from (``pooling``/``normalize`` are needed for a plain
    Hugging Face folder); ``kind``: ``auto`` (what the folder holds), ``dense``, ``colbert`` (a
    ColBERT folder as it is, any other encoder turned into a new ColBERT with an ``embedding_size``-wide
    random projection, seeded by ``run.seed``), ``sparse`` (a SPLADE model: a sentence-transformers
    SparseEncoder folder or a plain masked-LM folder) or ``cross_encoder`` (a reranker: a CrossEncoder
    or sequence-classification folder as it is, any other encoder under a new one-label head seeded by
    ``run.seed``); ``separate_towers``: untie a shared encoder into a
    query and a document tower (BET style); ``gradient_checkpointing``: trade compute for memory."""

    model: str = "minilm"
    kind: str = "auto"
    embedding_size: int = 128
    pooling: str | None = None
    normalize: bool | None = None
    separate_towers: bool = False
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    """``data``: training files (JSONL/TSV) or BEIR splits as ``DATASET[:SPLIT]``, one or several;
    every batch is drawn from one of them. ``num_negatives``: hard negatives per query (a
    cross-encoder's group is the positive and these: FlagEmbedding's ``train_group_size`` 8 is 7).
    A cross-encoder reads each pair cut to ``query_max_length + document_max_length`` tokens (its
    own limit without ``document_max_length``). ``positives_per_query``: distinct positives of each
    query put in a batch (as many as it has, up to this), for the ``marginal`` loss option."""

    data: list[str] = field(default_factory=list)
    batch_size: int = 32
    num_negatives: int = 1
    positives_per_query: int = 1
    query_max_length: int = 64
    document_max_length: int | None = None


@dataclass
class LossConfig:
    """``loss``: infonce | cached_infonce | margin_mse | kl for bi-encoders, group_softmax | bce |
    margin_mse | kl for cross-encoders, and their options (``mini_batch_size``: texts encoded at once
    by cached_infonce; ``temperature``: 0.05 for bi-encoders' similarities, 1 for cross-encoders'
    logits, when not given; ``marginal``: infonce's synonym marginalisation, every positive of a
    query in the batch counting towards it, as BioSyn trains). Sparse (SPLADE) models add FLOPS on the documents
    (``document_regularizer_weight``) and ``query_regularizer`` (flops or l1) on the queries
    (``query_regularizer_weight``, the document weight when unset), both warmed up quadratically over
    ``regularizer_warmup_ratio`` of the steps."""

    loss: str = "infonce"
    temperature: float | None = None
    learnable_temperature: bool = False
    symmetric: bool = False
    marginal: bool = False
    mask_false_negatives: bool = True
    gather_across_devices: bool = False
    teacher_temperature: float = 1.0
    mini_batch_size: int = 16
    document_regularizer_weight: float = 0.0
    query_regularizer_weight: float | None = None
    query_regularizer: str = "flops"
    regularizer_warmup_ratio: float = 1 / 3


@dataclass
class OptimizerConfig:
    """AdamW with linear warmup then linear decay."""

    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: int = 1
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    max_grad_norm: float = 1.0


@dataclass
class RunConfig:
    """Where and how: ``output`` folder, seed, Lightning's ``accelerator``/``devices``/``num_nodes``/
    ``strategy``/``precision`` (``bf16-mixed`` or ``16-mixed`` on GPUs), checkpoint interval, resume;
    ``retain_memory``: keep freed memory in the process (see :mod:`retrievekit.training.allocator`)."""

    output: str = "runs/train"
    seed: int = 42
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    checkpoint_every: int = 100
    resume: bool = True
    log_every: int = 10
    progress: bool = True
    retain_memory: bool = True


@dataclass
class EvaluationConfig:
    """Evaluation on a dev split through the evaluation runner; early stopping on ``ndcg@10``. A
    cross-encoder is evaluated reranking the top ``rerank_top_k`` of ``first_stage`` (a registered
    retriever that needs no model: bm25)."""

    dev_dataset: str | None = None
    dev_split: str = "dev"
    eval_every: int = 0
    patience: int = 3
    eval_batch_size: int = 64
    first_stage: str = "bm25"
    rerank_top_k: int = 100
    dev_linking: str | None = None  # an entity-linking data folder: early stopping on its dev acc@1
    dev_linking_protocol: str = "raw"  # raw (mentions in context) or biosyn (mention parts, BioSyn's dictionary)
    dev_entity_vectors: str = "names"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, values: dict[str, Any]) -> TrainConfig:
        """A copy with flat ``{field: value}`` overrides applied (unknown names are an error)."""
        sections = {name: dict(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}
        owners = {f: s for s, fields in config_fields().items() for f in fields}
        for key, value in values.items():
            if key not in owners:
                raise ConfigError(f"unknown training option {key!r}")
            sections[owners[key]][key] = value
        return _build(sections)


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "run": RunConfig,
    "evaluation": EvaluationConfig,
}


def config_fields() -> dict[str, dict[str, dataclasses.Field]]:
    """``{section: {field name: Field}}``; field names are unique across sections."""
    return {name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in _SECTIONS.items()}


def _coerce(section: str, name: str, value: Any) -> Any:
    kind = typing.get_type_hints(_SECTIONS[section])[name]
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{section}.{name} must not be empty")
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    origin = typing.get_origin(base)
    try:
        if origin is list:
            return [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
        if base is bool:
            return _as_bool(value)
        if base is int:
            return _as_int(value)
        if base is float:
            return _as_float(value)
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


def _as_int(value: Any) -> int:
    """Integers only: ``3.9`` or ``true`` where a count is meant is an error, not 3 or 1."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _build(sections: dict[str, dict[str, Any]]) -> TrainConfig:
    built = {}
    for section, cls in _SECTIONS.items():
        raw = sections.get(section) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) in section {section!r}: {', '.join(unknown)}")
        built[section] = cls(**{k: _coerce(section, k, v) for k, v in raw.items()})
    config = TrainConfig(**built)
    _check(config)
    return config


def _check(config: TrainConfig) -> None:
    data, loss, optimizer, run = config.data, config.loss, config.optimizer, config.run
    minimums = {
        "query_max_length": (data.query_max_length, 2),
        "document_max_length": (data.document_max_length, 2),
        "mini_batch_size": (loss.mini_batch_size, 1),
        "positives_per_query": (data.positives_per_query, 1),
        "accumulate_grad_batches": (optimizer.accumulate_grad_batches, 1),
        "log_every": (run.log_every, 1),
        "num_nodes": (run.num_nodes, 1),
        "eval_batch_size": (config.evaluation.eval_batch_size, 1),
        "patience": (config.evaluation.patience, 0),
        "rerank_top_k": (config.evaluation.rerank_top_k, 1),
        "eval_every": (config.evaluation.eval_every, 0),
    }
    for name, (value, minimum) in minimums.items():
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    from retrievekit.linking.evaluate import check_protocol

    check_protocol(config.evaluation.dev_linking_protocol, "dev_linking_protocol")
    if config.model.kind not in ("auto", "dense", "colbert", "sparse", "cross_encoder"):
        raise ConfigError(f"kind must be auto, dense, colbert, sparse or cross_encoder, got {config.model.kind!r}")
    if config.model.embedding_size < 1:
        raise ConfigError(f"embedding_size must be at least 1, got {config.model.embedding_size}")
    if optimizer.learning_rate < 0:
        raise ConfigError(f"learning_rate must be 0 or more, got {optimizer.learning_rate}")
    positives = {
        "temperature": loss.temperature,
        "teacher_temperature": loss.teacher_temperature,
    }
    for name, number in positives.items():
        if number is not None and not number > 0:
            raise ConfigError(f"{name} must be a positive number, got {number}")
    if optimizer.weight_decay < 0 or optimizer.max_grad_norm < 0:
        raise ConfigError("weight_decay and max_grad_norm must be 0 or more")
    if config.data.batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if config.data.num_negatives < 0:
        raise ConfigError("num_negatives must be 0 or more")
    if loss.marginal and loss.loss not in ("infonce", "cached_infonce"):
        raise ConfigError(f"marginal is an option of the infonce and cached_infonce losses, not of {loss.loss}")
    if data.positives_per_query > 1 and not loss.marginal:
        raise ConfigError("positives_per_query above 1 feeds the marginal loss: set marginal: true in the loss section")
    if config.optimizer.epochs < 1 and config.optimizer.max_steps < 1:
        raise ConfigError("give epochs >= 1 or max_steps >= 1")
    if not 0 <= config.optimizer.warmup_ratio < 1:
        raise ConfigError("warmup_ratio must be in [0, 1)")
    if config.run.checkpoint_every < 1:
        raise ConfigError("checkpoint_every must be at least 1 step")


def _read_text(path: Path) -> str:
    """UTF-8 (with or without a byte-order mark), or UTF-16 with its mark, as editors on Windows save it."""
    raw = path.read_bytes()
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 or UTF-16 text (byte {exc.start}); save it as UTF-8") from None


def _option_lines(yaml: Any, text: str) -> dict[str, int]:
    """``{"section.option": line}`` (1-based) of every option in a YAML config, for error messages."""
    lines: dict[str, int] = {}
    root = yaml.compose(text)
    for section_key, section in getattr(root, "value", []) if root is not None else []:
        for key, _ in section.value if isinstance(section.value, list) else []:
            lines[f"{section_key.value}.{key.value}"] = key.start_mark.line + 1
            lines.setdefault(key.value, key.start_mark.line + 1)  # checks that name the option alone
    return lines


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file (sections as in :class:`TrainConfig`), then flat overrides."""
    sections: dict[str, Any] = {}
    if path is not None:
        yaml = require("yaml", extra="train", purpose="Reading a YAML training config")

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(_SECTIONS)})")
        unknown = sorted(set(loaded) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; expected {', '.join(_SECTIONS)}")
        sections = loaded
        try:
            config = _build(sections)
        except ConfigError as exc:  # name the file and the line of the offending option
            line = _option_lines(yaml, _read_text(path)).get(str(exc).split(":", 1)[0].split(" ", 1)[0])
            raise ConfigError(f"{path}:{line}: {exc}" if line else f"{path}: {exc}") from None
        return config.updated(overrides) if overrides else config
    config = _build(sections)
    return config.updated(overrides) if overrides else config
