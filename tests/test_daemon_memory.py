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


def test_without_glibc_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_LIBC", None)  # musl, macOS, Windows
    assert memory.keep_heap_small() is False
    assert memory.release_freed_memory() is False


# In a fresh interpreter: a 30 MiB block freed (glibc then raises its mmap threshold to 30 MiB and its trim
# threshold to 60 MiB), then on a thread, as the daemon's scans run, 48 MiB in 1 MiB blocks allocated and
# freed; prints how far VmRSS stayed above where it was before, in KiB, once release_freed_memory() ran.
_THREAD_SCENARIO = """
import sys, threading
from exporter.daemon.memory import keep_heap_small, release_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
if sys.argv[1] == "tuned":
    keep_heap_small()
big = bytes(range(256)) * (120 * 1024)
del big
start = rss()
def scan():
    blocks = [bytes(range(256)) * 4096 for _ in range(48)]
    del blocks
thread = threading.Thread(target=scan)
thread.start()
thread.join()
release_freed_memory()
print(rss() - start)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_threads_freed_heap_goes_back_too() -> None:
    out = subprocess.run([sys.executable, "-c", _THREAD_SCENARIO, "tuned"], capture_output=True, text=True,
                         check=True).stdout
    assert int(out) < 8 * 1024, out  # KiB kept of the 48 MiB the thread freed
