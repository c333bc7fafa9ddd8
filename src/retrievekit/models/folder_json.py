"""What the folder readers of every family share: reading a JSON file that may be missing or
damaged, and building a settings dataclass from the keys it knows."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from retrievekit.errors import ArtifactError, ConfigError

__all__ = ["read_json", "settings_from_dict"]

T = TypeVar("T")


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def settings_from_dict(cls: type[T], raw: dict[str, Any], source: str) -> T:
    """``cls`` (a dataclass) from the keys of ``raw`` it has; a value its checks refuse is an
    :class:`ArtifactError` naming ``source``."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in raw.items() if k in names})
    except (ConfigError, TypeError) as exc:
        raise ArtifactError(f"{source}: {exc}") from None
