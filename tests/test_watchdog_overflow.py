"""A real kernel inotify queue overflow reaches ``on_overflow``, and the daemon needs no watchdog.

``max_queued_events`` is lowered for real (root only; restored afterwards) and the watcher runs in a
child process that is stopped with SIGSTOP while files are created, so its queue overflows whatever
reads it: the kernel drops the events past the limit and queues one ``IN_Q_OVERFLOW`` instead. The
daemon's own overflow path (counter, reconcile scan) is tested end to end in
``tests/test_daemon_limits.py::test_queue_overflow_is_counted_and_recovered``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.daemon.inotify import InotifyWatcher
from exporter.daemon.targets import Target, WatchSpec
from tests.httpwait import poll
from tests.test_daemon import DEADLINE
from tests.test_daemon_limits import frozen, inotify_limit

QUEUE = 16  # max_queued_events while the watcher's inotify instance is created (read then, kept for its life)
FILES = 200  # each a create and a close-write: 400 events, far past QUEUE

# The watcher in a child process. With PROBE_BLOCK_WATCHDOG set, any import of watchdog fails, and every
# module of the daemon is imported first: the daemon must not need watchdog at all.
PROBE = """
import json, os, pkgutil, sys, importlib
if os.environ.get("PROBE_BLOCK_WATCHDOG"):
    sys.modules["watchdog"] = None
    import exporter.cli, exporter.daemon
    for module in pkgutil.iter_modules(exporter.daemon.__path__, "exporter.daemon."):
        importlib.import_module(module.name)
from exporter.daemon.inotify import InotifyWatcher
from exporter.daemon.targets import WatchSpec

watched, marks = sys.argv[1], sys.argv[2]
counts = {"targets": 0, "overflows": 0, "watchdog_loaded": sys.modules.get("watchdog") is not None}

def mark(name):
    open(os.path.join(marks, name), "w").close()

def on_target(target):
    counts["targets"] += 1
    if counts["overflows"]:
        mark("target-after-overflow")

def on_overflow():
    counts["overflows"] += 1
    mark("overflow")

watcher = InotifyWatcher(on_target, on_overflow)
watcher.sync({watched: WatchSpec(watched, "pkgs", os.path.dirname(watched))})
assert watcher.count == 1, watcher.count
mark("ready")
sys.stdin.read()
watcher.stop()
print(json.dumps(counts), flush=True)
"""


@pytest.fixture
def small_queue() -> Iterator[None]:
    """``max_queued_events`` at QUEUE for the test, the old value restored after it (skips unless root)."""
    with inotify_limit("max_queued_events", QUEUE):
        yield


def overflow_in_child(tmp_path: Path, env: dict[str, str]) -> dict[str, int]:
    """Run PROBE, overflow its queue while it is stopped, and return its counts once it saw the overflow
    and, after it, one more event (the watches survive an overflow)."""
    watched, marks = tmp_path / "pkgs", tmp_path / "marks"
    watched.mkdir()
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(watched), str(marks)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )

    def seen(name: str) -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"probe exited with {proc.returncode}: {proc.communicate()[1][-3000:]}")
        return True if (marks / name).exists() else None

    try:
        poll(lambda: seen("ready"), DEADLINE, "the probe's watch")
        with frozen(proc.pid):
            for i in range(FILES):
                (watched / f"f{i}").write_bytes(b"x")
        poll(lambda: seen("overflow"), DEADLINE, "on_overflow after a real kernel queue overflow")
        (watched / "after").write_bytes(b"x")
        poll(lambda: seen("target-after-overflow"), DEADLINE, "an event after the overflow")
        out, err = proc.communicate("", timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    counts: dict[str, int] = json.loads(out.splitlines()[-1])
    return counts


def test_a_real_queue_overflow_calls_on_overflow(small_queue: None, tmp_path: Path) -> None:
    counts = overflow_in_child(tmp_path, dict(os.environ))
    assert counts["overflows"] == 1  # the kernel queues one IN_Q_OVERFLOW while the queue stays full
    assert QUEUE <= counts["targets"] < 2 * FILES  # what fitted in the queue, then the post-overflow event


def test_the_daemon_needs_no_watchdog(small_queue: None, tmp_path: Path) -> None:
    """Every daemon module imports, and the overflow is still seen, with watchdog unimportable."""
    counts = overflow_in_child(tmp_path, {**os.environ, "PROBE_BLOCK_WATCHDOG": "1"})
    assert counts["overflows"] == 1
    assert not counts["watchdog_loaded"]


def test_a_failing_callback_does_not_stop_the_reader(tmp_path: Path) -> None:
    got: list[Target] = []
    first = threading.Event()

    def on_target(target: Target) -> None:
        if not first.is_set():
            first.set()
            raise RuntimeError("boom")
        got.append(target)

    watcher = InotifyWatcher(on_target, lambda: None)
    try:
        watcher.sync({str(tmp_path): WatchSpec(str(tmp_path), "pkgs", str(tmp_path.parent))})
        (tmp_path / "one").write_bytes(b"x")
        poll(lambda: True if first.is_set() else None, DEADLINE, "the failing callback")
        (tmp_path / "two").write_bytes(b"x")
        poll(lambda: got or None, DEADLINE, "an event after the failing callback")
        assert got[0] == Target("pkgs", str(tmp_path), str(tmp_path.parent))
    finally:
        watcher.stop()


def test_stop_releases_the_inotify_fd(tmp_path: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    watcher = InotifyWatcher(lambda target: None, lambda: None)
    watcher.sync({str(tmp_path): WatchSpec(str(tmp_path), "pkgs", str(tmp_path.parent))})
    assert watcher.count == 1
    watcher.stop()
    watcher.stop()  # twice is harmless
    assert fds() == before


def test_a_deleted_directory_is_reported_and_watched_again(tmp_path: Path) -> None:
    watched = tmp_path / "pkgs"
    watched.mkdir()
    specs = {str(watched): WatchSpec(str(watched), "pkgs", str(tmp_path))}
    got: list[Target] = []
    watcher = InotifyWatcher(got.append, lambda: None)
    try:
        watcher.sync(specs)
        watched.rmdir()  # IN_DELETE_SELF, then IN_IGNORED: the kernel dropped the watch
        poll(lambda: True if watcher.count == 0 else None, DEADLINE, "the dropped watch to be forgotten")
        assert got == [Target("pkgs", str(watched), str(tmp_path))]
        watched.mkdir()
        watcher.sync(specs)
        assert watcher.count == 1
        (watched / "new").write_bytes(b"x")
        poll(lambda: True if len(got) > 1 else None, DEADLINE, "an event in the recreated directory")
    finally:
        watcher.stop()
