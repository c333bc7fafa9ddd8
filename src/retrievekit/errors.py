"""One exception tree for the whole library.

Every error retrievekit raises on purpose derives from :class:`RetrievekitError`, so callers can
catch the family with one ``except`` and the CLI can print the message without a stack trace.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataFormatError",
    "DatasetNotFoundError",
    "MissingExtraError",
    "ModelNotFoundError",
    "RetrievekitError",
]


class RetrievekitError(Exception):
    """Base class of every error raised by retrievekit."""


class ConfigError(RetrievekitError, ValueError):
    """An option or a combination of options is invalid."""


class DataFormatError(RetrievekitError, ValueError):
    """An input file is malformed. The message names the file, the line (when known) and the problem."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[DataFormatError], tuple[Path, str, int | None]]:
        """Pickled with its own arguments, so it crosses a process boundary (a Ray worker) intact."""
        return type(self), (self.path, self.problem, self.line)


class ArtifactError(RetrievekitError):
    """A saved directory is missing, incomplete, of the wrong kind or of an unsupported version."""


class ModelNotFoundError(RetrievekitError):
    """A model name or path could not be resolved to a local directory."""


class DatasetNotFoundError(RetrievekitError):
    """A dataset name or path could not be resolved to a local BEIR folder."""


class MissingExtraError(RetrievekitError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'retrievekit[{extra}]'"
        )
