"""The trust boundary around artifacts: what a file someone hands you may make the program do.

An artifact is data. What it records about the model that produced it (a model reference and the
loading options) is used only within these limits:

- options come from an allow-list (:data:`ARTIFACT_MODEL_OPTIONS`), each checked for type and
  range; anything else, ``trust_remote_code`` above all, is refused with an error naming the key:
  running a model's own code is allowed only by the caller's own flag, never by a file;
- a recorded model is loaded only when it lies inside the artifact's folder or is the bundled
  MiniLM; a path elsewhere on disk or a hub id is used only when the caller names it (``--model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrievekit.errors import ArtifactError
from retrievekit.models.spec import POOLING_MODES
from retrievekit.resolve import MINILM_ALIASES

__all__ = ["ARTIFACT_MODEL_OPTIONS", "check_artifact_model_options", "recorded_model"]


def _pooling(value: Any) -> bool:
    return value is None or value in POOLING_MODES


def _flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _length(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 2 <= value <= 1_000_000)


def _text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= 10_000)


# the model options an artifact may record, per model family, each with its check
ARTIFACT_MODEL_OPTIONS = {
    "dense": {
        "pooling": _pooling,
        "normalize": _flag,
        "max_length": _length,
        "query_prompt": _text,
        "document_prompt": _text,
    },
    "multivector": {
        "query_length": _length,
        "document_length": _length,
        "attend_to_expansion_tokens": _flag,
    },
    "sparse": {"max_active_dims": _length, "max_length": _length},
}


def check_artifact_model_options(options: Any, source: Path, family: str = "dense") -> dict[str, Any]:
    """The model options recorded in ``source`` for a ``family`` model, if every one is allowed and
    well-formed."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ArtifactError(f"{source}: model_options must be a JSON object, got {type(options).__name__}")
    allowed = ARTIFACT_MODEL_OPTIONS.get(family, {})
    for key, value in options.items():
        if key not in allowed:
            advice = " (pass --trust-remote-code yourself if you trust the model)" if key == "trust_remote_code" else ""
            raise ArtifactError(
                f"{source}: model option {key!r} may not come from a file; allowed: {', '.join(allowed)}{advice}"
            )
        if not allowed[key](value):
            raise ArtifactError(f"{source}: model option {key!r} has an invalid value {value!r:.80}")
    return dict(options)


def recorded_model(reference: Any, artifact: Path) -> str:
    """The model an artifact records, if it may be loaded without the caller naming it: the bundled
    MiniLM, or a folder inside ``artifact``. Anything else raises, saying to pass ``--model``."""
    if not isinstance(reference, str) or not reference.strip():
        raise ArtifactError(f"{artifact}: records no usable model; pass --model")
    if reference.lower() in MINILM_ALIASES:
        return reference
    root = artifact.resolve()
    candidate = Path(reference)
    candidate = (root / candidate if not candidate.is_absolute() else candidate).resolve()
    if candidate == root or root in candidate.parents:
        return str(candidate)
    raise ArtifactError(
        f"{artifact}: was built with model {reference!r}, which lies outside the index; an index cannot "
        f"choose a model to load. If you trust it, pass --model {reference}"
    )
