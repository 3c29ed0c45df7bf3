"""The daemon hands freed heap back to the operating system (exporter.daemon.memory)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from exporter.daemon import memory

GLIBC = platform.libc_ver()[0] == "glibc"

# In a fresh interpreter: 64 MiB in 64 KiB blocks (under glibc's mmap threshold, so inside the heap), each
# followed by a small block that stays (so the freed ones never merge into the heap's top, which glibc would
# trim by itself), the 64 MiB freed; prints VmRSS in KiB before and after release_freed_memory().
_SCENARIO = """
from exporter.daemon.memory import release_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
pairs = [(bytes(range(256)) * 256, bytes(range(256)) * 4) for _ in range(1024)]  # written, so resident
keepers = [small for _, small in pairs]
del pairs
before = rss()
released = release_freed_memory()
print(before, rss(), released)
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", _SCENARIO], capture_output=True, text=True, check=True).stdout
    before, after, released = out.split()
    assert released == "True"
    assert int(before) - int(after) >= 48 * 1024, out  # of the 64 MiB freed, in KiB


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_TRIM", None)  # musl, macOS, Windows
    assert memory.release_freed_memory() is False
