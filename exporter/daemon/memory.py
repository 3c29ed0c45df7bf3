"""Daemon, memory: give the heap a scan freed back to the operating system.

A scan's transient allocations (worker results received and unpickled, the columns of the snapshot it
replaces, the state file's encoded text) are freed once the new snapshot is published, but glibc's
``malloc`` keeps freed memory for reuse: the daemon's resident size stayed near its peak, about twice what
the served snapshot needs. Two things keep it down:

* ``malloc_trim(0)`` after each published scan hands every wholly free page inside the heaps back
  (``madvise(MADV_DONTNEED)``);
* fixed mmap and trim thresholds (``mallopt``): glibc otherwise raises both as big blocks are freed (up to
  32 and 64 MiB), and then keeps up to 64 MiB free at the top of each thread's heap, which ``malloc_trim``
  never shrinks (it does so for the main thread's heap only); the scans run on threads. Fixed at 4 MiB, a
  block that big is mapped on its own and unmapped when freed, and a heap's free top is returned once it
  passes 4 MiB. Not lower: each /metrics answer is one block of the body's size (700 KB for 300 envs), and
  mapped afresh for each scrape it halved the scrapes served per second (128 KiB: p50 13.5 ms, not 7).

Elsewhere (musl, macOS, Windows) there are no such calls and this does nothing.
"""

from __future__ import annotations

import ctypes

__all__ = ["THRESHOLD_BYTES", "keep_heap_small", "release_freed_memory"]

THRESHOLD_BYTES = 4 * 1024 * 1024  # mmap and trim thresholds (glibc starts them at 128 KiB, raised as it goes)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter already runs on
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError, TypeError):  # no such symbols (not glibc), or no dlopen(NULL) (Windows)
        return None
    return libc


_LIBC = _libc()


def keep_heap_small() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module doc) for the rest of the process, before the
    first scan; True if the C library has them (glibc)."""
    if _LIBC is None:
        return False
    results = [_LIBC.mallopt(parameter, THRESHOLD_BYTES) for parameter in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD)]
    return all(results)  # (mallopt answers 1 when it took the value)


def release_freed_memory() -> bool:
    """Return the free pages of the C heap to the operating system; True if the C library can (glibc).
    Costs a walk of the heap's free chunks: milliseconds, so it runs after each published scan."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
