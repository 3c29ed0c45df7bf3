"""Hardening (issue 18, item 3): no exception ends the daemon's scheduling loop, and if it ends the store says so.

The deep state file is a real file on disk; the loop failure in the last test is injected (a step that raises),
since no real fault is known to escape the guard any more.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from exporter.daemon.guard import guarded, run_guarded
from exporter.daemon.state import load_state, save_state
from exporter.discover.roots import discover_root
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.condaops import pip_install
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch
from tests.options import scan_options
from tests.test_daemon import Running
from tests.test_daemon_limits import inotify_limit, launch_ready, metric, stop

DEPTH = 600  # "a few hundred levels": past the recursion limit of json's parser and of the decoder


def test_a_deeply_nested_state_file_is_refused_not_raised(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    state = tmp_path / "state.json"
    save_state(str(state), [str(root)], snapshot, {})
    document = json.loads(state.read_text())
    document["snapshot"]["errors"] = "NESTED"
    nested = '{"__tuple__":[' * DEPTH + "[]" + "]}" * DEPTH  # written as text: json.dumps would recurse too
    state.write_text(json.dumps(document).replace('"NESTED"', nested))
    assert load_state(str(state), [str(root)]).result == "too_deep"  # refused before parsing


def test_a_failing_step_is_counted_and_the_loop_goes_on() -> None:
    store, stop = SnapshotStore(), threading.Event()
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")  # injected: the kind of error a scan step meets
        stop.set()

    stop.set()  # no back-off wait in the test; the guard must still count and return False
    assert guarded("loop", step, store, stop) is False
    assert guarded("loop", step, store, stop) is True
    assert store.health().daemon_errors_total == {"loop": 1}
    assert store.alive() == (True, "")


def test_a_loop_that_ends_before_stop_marks_the_store_not_alive() -> None:
    store, stop = SnapshotStore(), threading.Event()

    def serve() -> None:
        raise MemoryError("injected")  # injected: not an Exception, so the step guard lets it through

    with pytest.raises(MemoryError):
        run_guarded(serve, store, stop)
    ok, reason = store.alive()
    assert not ok and "MemoryError" in reason

    clean = SnapshotStore()
    stop.set()
    run_guarded(lambda: None, clean, stop)  # ended because asked to: still alive
    assert clean.alive() == (True, "")


def inotify_instances_in_use() -> int:
    """inotify instances open on the machine (``max_user_instances`` counts those of the user; all are root's
    here or fewer, so the limit set from this count is reached for certain)."""
    count = 0
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue
    return count


def test_inotify_instance_limit_falls_back_to_polling(exporter_cmd: list[str], tmp_path: Path) -> None:
    """A real EMFILE from inotify_init1: max_user_instances lowered to what is in use (root; restored after)."""
    root = build_fixture_root(tmp_path / "conda")
    with inotify_limit("max_user_instances", inotify_instances_in_use()):
        proc, port = launch_ready(exporter_cmd, root, tmp_path, "--watch.mode", "inotify",
                                  "--watch.poll-interval", "0.3")
    try:
        assert metric(port, "conda_exporter_watch_limit_reached") == 1
        assert metric(port, "conda_exporter_watch_mode", mode="poll") == 1
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
        pip_install(root / "envs" / "web", "late", 40_000)
        Running(proc, port, root).converge("a pip install seen by polling after the instance limit")
    finally:
        log = stop(proc)
    assert "inotify_init1: Too many open files" in log, log[-2000:]  # the instance limit, not a watch


def test_a_failed_startup_scan_is_retried_with_a_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 4. The fault is injected (the first full scan raises EMFILE, as a process at its fd
    limit would): no real fault is known that fails a whole scan once and then clears by itself."""
    from exporter.daemon import scheduler as scheduling
    from exporter.discover.roots import Discovery

    root = build_fixture_root(tmp_path / "conda")
    calls: list[float] = []
    real_scan = full_scan

    def flaky_scan(*args: object, **kwargs: object) -> object:
        calls.append(1.0)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real_scan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("exporter.daemon.scheduler.full_scan", flaky_scan)
    store = SnapshotStore()
    config = scheduling.DaemonConfig(debounce=0.2, mode="poll", poll_interval=3600.0, reconcile_interval=0.0,
                                     state_file=None)
    daemon = scheduling.Daemon(Discovery((str(root),), (), False), scan_options(workers=1), config, store)
    daemon.start()
    try:
        assert store.wait_ready(60), "the startup scan was never retried"
        assert len(calls) == 2
        health = store.health()
        assert health.daemon_errors_total == {"startup": 1}
        assert store.alive() == (True, "")
    finally:
        assert daemon.stop(10)
