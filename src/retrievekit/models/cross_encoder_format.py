"""Cross-encoder (reranker) model folders: the settings and the layouts retrievekit reads (JSON only,
no torch): Hugging Face sequence-classification folders (bge-reranker style) and sentence-transformers
``CrossEncoder`` saves (version 5's ``config.json`` key, version 6's ``config_sentence_transformers.json``).

The activation a folder names is looked up in a fixed table, never imported: a name outside it is
an error, whatever the folder says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.folder_json import read_json as _json
from retrievekit.models.folder_json import settings_from_dict

__all__ = ["ACTIVATIONS", "CROSS_ENCODER_KIND", "CrossEncoderConfig", "is_cross_encoder_folder", "read_cross_encoder"]

CROSS_ENCODER_KIND = "cross_encoder"
ACTIVATIONS = ("sigmoid", "identity", "tanh", "softmax")
# sentence-transformers' names of the activations (class paths) -> ours; nothing else is accepted
_ST_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.Softmax": "softmax",
}
ST_ACTIVATION_NAMES = {
    "sigmoid": "torch.nn.modules.activation.Sigmoid",
    "identity": "torch.nn.modules.linear.Identity",
    "tanh": "torch.nn.modules.activation.Tanh",
    "softmax": "torch.nn.modules.activation.Softmax",
}
_MAX_LENGTH = 8192


@dataclass(frozen=True)
class CrossEncoderConfig:
    """How a cross-encoder scores a pair: ``activation`` applied in float32 to the model's logits
    (sentence-transformers' default: ``sigmoid`` for one label, ``identity`` for several);
    ``max_length``: tokens per pair (None: the tokenizer's and positions' limit); ``truncation``:
    which text loses tokens first (``longest_first``, as sentence-transformers and FlagEmbedding)."""

    activation: str = "sigmoid"
    max_length: int | None = None
    truncation: str = "longest_first"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        value = self.max_length
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= _MAX_LENGTH
        ):
            raise ConfigError(f"max_length must be an integer from 2 to {_MAX_LENGTH} or null, got {value!r}")
        if self.truncation not in ("longest_first", "only_first", "only_second"):
            raise ConfigError(f"truncation must be longest_first, only_first or only_second, got {self.truncation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> CrossEncoderConfig:
        return settings_from_dict(cls, raw, source)


def is_cross_encoder_folder(root: Path) -> bool:
    """A sequence-classification model folder, or a sentence-transformers CrossEncoder save.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text('{"architectures": ["XLMRobertaForSequenceClassification"]}')
    >>> is_cross_encoder_folder(folder)
    True
    """
    st = _json(root / "config_sentence_transformers.json")
    if isinstance(st, dict) and st.get("model_type") == "CrossEncoder":
        return True
    config = _json(root / "config.json")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForSequenceClassification") for a in architectures)


def read_cross_encoder(root: Path, activation: str | None = None) -> CrossEncoderConfig:
    """The settings of a folder without retrievekit's manifest: the activation it names (version 5's
    ``config.json`` ``sentence_transformers.activation_fn``, version 6's ``config_sentence_transformers.json``),
    else sentence-transformers' default for its number of labels; the caller's ``activation`` wins
    (and the folder's name for it is then not read)."""
    config = _json(root / "config.json")
    if not isinstance(config, dict):
        raise ArtifactError(f"{root / 'config.json'}: missing or not a JSON object")
    named: Any = None
    source = root / "config.json"
    st_block = config.get("sentence_transformers")
    if isinstance(st_block, dict):
        named = st_block.get("activation_fn")
    st = _json(root / "config_sentence_transformers.json")
    if named is None and isinstance(st, dict):
        named, source = st.get("activation_fn"), root / "config_sentence_transformers.json"
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if activation is not None:
        pass
    elif named is None:
        activation = "sigmoid" if labels == 1 else "identity"
    elif named in _ST_ACTIVATIONS:
        activation = _ST_ACTIVATIONS[named]
    else:
        raise ArtifactError(
            f"{source}: activation {named!r} is not one retrievekit knows ({', '.join(sorted(_ST_ACTIVATIONS))}); "
            "a folder's names are never imported. Pass activation= explicitly"
        )
    values: dict[str, Any] = {"activation": activation}
    bert = _json(root / "sentence_bert_config.json")
    if isinstance(bert, dict) and isinstance(bert.get("max_seq_length"), int):
        values["max_length"] = bert["max_seq_length"]
    return CrossEncoderConfig.from_dict(values, str(source))
