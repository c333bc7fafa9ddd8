"""Lazy imports of heavy optional backends, with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from retrievekit.errors import MissingExtraError


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    >>> require("json", extra="core", purpose="Reading manifests").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # only a missing package is translated; other errors propagate
        if exc.name is not None and not module.startswith(exc.name):
            raise
        raise MissingExtraError(module, extra, purpose) from exc
