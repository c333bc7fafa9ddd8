"""Write a 2-d float32 ``.npy`` file row-chunk by row-chunk when the row count is not known in advance."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from retrievekit.artifacts import staging_sibling, tidy_dead_staging

__all__ = ["NpyStreamWriter"]

_HEADER_BYTES = 128  # fixed, so the real header can be written over the placeholder at the end


def _header(rows: int, dim: int) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    body_len = _HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    text = text.ljust(body_len - 1) + "\n"
    if len(text) != body_len:
        raise ValueError("npy header overflow")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


class NpyStreamWriter:
    """Append float32 rows; on a clean exit the file is complete and moved into place atomically.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.npy"
    >>> with NpyStreamWriter(path, 2) as w:
    ...     w.append(np.ones((3, 2), dtype=np.float32))
    >>> np.load(path, mmap_mode="r").shape
    (3, 2)
    """

    def __init__(self, path: str | Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = dim
        self.count = 0
        self._tmp = staging_sibling(self.path, "partial")
        self._handle: BinaryIO | None = None

    def __enter__(self) -> NpyStreamWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tidy_dead_staging(self.path)
        self._handle = handle = self._tmp.open("wb")
        handle.write(_header(0, self.dim))
        return self

    def append(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of dimension {self.dim}, got shape {rows.shape}")
        if self._handle is None:
            raise ValueError("append() outside the writer's with block")
        self._handle.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.count += len(rows)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if exc_type is None:
                handle.seek(0)
                handle.write(_header(self.count, self.dim))
                handle.flush()
                os.fsync(handle.fileno())
            handle.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
