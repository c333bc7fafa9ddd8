"""Keep freed memory in the process while training on the CPU.

glibc's malloc serves every block above 128 KiB-32 MiB with a fresh ``mmap`` and returns it to the
system on ``free``. A training step allocates and frees gigabytes of activations, so every step
faults the same memory back in (figures in benchmarks/README.md). Raising the mmap and trim
thresholds makes freed blocks stay in the heap for the next
step. The cost: the process keeps its peak memory while training; :func:`retained_freed_memory`
restores the defaults and hands the memory back to the system when training ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from collections.abc import Iterator

__all__ = ["retain_freed_memory", "retained_freed_memory"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_DEFAULTS = {_M_MMAP_THRESHOLD: 128 * 1024, _M_TRIM_THRESHOLD: 128 * 1024}  # glibc's documented defaults


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return None
    return libc


def retain_freed_memory() -> bool:
    """Ask glibc (Linux) to keep freed memory for reuse; return whether the settings applied.
    A no-op elsewhere (other platforms and allocators manage this themselves)."""
    libc = _glibc()
    if libc is None:
        return False
    applied = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    logger.debug("malloc thresholds raised: %s", applied)
    return applied


def release_retained_memory() -> None:
    """Restore glibc's default thresholds and return free heap memory to the system."""
    libc = _glibc()
    if libc is not None:
        for option, value in _DEFAULTS.items():
            libc.mallopt(option, value)
        libc.malloc_trim(0)


@contextlib.contextmanager
def retained_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory inside the block (training), give it back after (yields whether applied)."""
    applied = retain_freed_memory() if enabled else False
    try:
        yield applied
    finally:
        if applied:
            release_retained_memory()
