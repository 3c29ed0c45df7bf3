"""Daemon, memory: give the heap a scan freed back to the operating system.

A scan's transient allocations (worker results received and unpickled, the columns of the snapshot it
replaces, the state file's encoded text) are freed once the new snapshot is published, but glibc's
``malloc`` keeps freed memory inside its arenas for reuse: the daemon's resident size stayed near its
peak, about twice what the served snapshot needs. ``malloc_trim(0)`` hands every wholly free page of
every arena back (``madvise(MADV_DONTNEED)``), so the steady resident size follows what is kept.
Elsewhere (musl, macOS, Windows) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

__all__ = ["release_freed_memory"]

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter already runs on
    except (OSError, AttributeError, TypeError):  # no such symbol (not glibc), or no dlopen(NULL) (Windows)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Return the free pages of the C heap to the operating system; True if the C library can (glibc).
    Costs a walk of the heap's free chunks: milliseconds, so it runs after each published scan."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
