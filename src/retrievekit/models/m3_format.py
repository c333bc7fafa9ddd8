"""BGE-M3 model folders: the settings, and the layout retrievekit reads (file names only, no torch).

A BGE-M3 folder (FlagEmbedding's layout) is a Hugging Face encoder folder (XLM-RoBERTa for the
released model) with two head files beside it: ``colbert_linear`` (``Linear(H, d)``: the
multi-vector projection) and ``sparse_linear`` (``Linear(H, 1)``: one lexical weight per token).
FlagEmbedding ships them as ``.pt`` files; retrievekit reads those only through torch's
``weights_only`` loader and saves them as ``.safetensors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievekit.errors import ConfigError
from retrievekit.models.folder_json import settings_from_dict

__all__ = ["DEFAULT_WEIGHTS", "HEAD_FILES", "M3_KIND", "M3_MODES", "M3Config", "head_file", "is_m3_folder"]

M3_KIND = "m3_encoder"
HEAD_FILES = ("colbert_linear", "sparse_linear")
# FlagEmbedding's compute_score modes, in its order
M3_MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
# the weights of the dense, sparse and multi-vector scores in the fused modes when none are given:
# FlagEmbedding's compute_score default (each fused mode is divided by the sum of its weights, so
# these average the scores); the BGE-M3 model card suggests (0.4, 0.2, 0.4)
DEFAULT_WEIGHTS = (1.0, 1.0, 1.0)
_MAX_LENGTH = 8192


@dataclass(frozen=True)
class M3Config:
    """How a BGE-M3 model reads texts (FlagEmbedding's defaults). How its scores are fused is the
    caller's choice at scoring time (``weights``; :data:`DEFAULT_WEIGHTS`), not part of the model.

    ``pooling``: the dense vector is the ``[CLS]`` state (``cls``) or the mean of the tokens';
    ``normalize``: L2-normalise dense and multi-vector outputs; ``query_max_length`` /
    ``document_max_length``: tokens read per query / document (FlagEmbedding's ``M3Embedder``
    defaults, 512 each; the released model reads up to 8192); ``query_prompt`` goes before each query.
    """

    pooling: str = "cls"
    normalize: bool = True
    query_max_length: int = 512
    document_max_length: int = 512
    query_prompt: str = ""

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"BGE-M3 pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be true or false, got {self.normalize!r}")
        for name in ("query_max_length", "document_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= _MAX_LENGTH:
                raise ConfigError(f"{name} must be an integer from 2 to {_MAX_LENGTH}, got {value!r}")
        if not isinstance(self.query_prompt, str):
            raise ConfigError(f"query_prompt must be a string, got {self.query_prompt!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> M3Config:
        """Known keys only; a value of the wrong type is an error naming ``source``."""
        return settings_from_dict(cls, raw, source)


def head_file(root: Path, stem: str) -> Path | None:
    """The file holding head ``stem`` under ``root``: ``.safetensors`` first, else FlagEmbedding's ``.pt``."""
    for suffix in (".safetensors", ".pt"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def is_m3_folder(root: Path) -> bool:
    """A transformer folder with BGE-M3's two head files beside its config."""
    return (root / "config.json").is_file() and all(head_file(root, stem) is not None for stem in HEAD_FILES)
