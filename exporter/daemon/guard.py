"""Daemon, guard: the scheduling loop's steps run so that no exception ends the loop.

Each exception a step raises is logged, counted in the store by where it happened
(``conda_exporter_daemon_errors_total``), and followed by a back-off; if the loop ends anyway, the store
records why (:meth:`exporter.snapshot.store.SnapshotStore.set_loop_failed`) and ``/healthz`` answers 503,
so a supervisor restarts the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from exporter.snapshot.store import SnapshotStore

__all__ = ["ERROR_BACKOFF", "MAX_BACKOFF", "StartupIncompleteError", "guarded", "retry_startup", "run_guarded"]

log = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0  # seconds waited after an error the loop survived, so a persistent one cannot spin
MAX_BACKOFF = 60.0  # seconds: the longest wait between retries of a failing startup


class StartupIncompleteError(Exception):
    """The startup step ran but left nothing to serve (its full scan failed): retry it."""


def guarded(where: str, step: Callable[[], None], store: SnapshotStore, stop: threading.Event,
            backoff: float = ERROR_BACKOFF) -> bool:
    """Run ``step``; on an exception log and count it by ``where``, wait ``backoff`` seconds (or until
    ``stop`` is set) and return False."""
    try:
        step()
    except Exception as exc:  # a StartupIncompleteError is expected: its message says all, no traceback
        log.error("daemon %s step failed: %s; retrying in %.0f s", where, exc, backoff,
                  exc_info=not isinstance(exc, StartupIncompleteError))
        store.count_daemon_error(where)
        stop.wait(backoff)
        return False
    return True


def retry_startup(startup: Callable[[], None], store: SnapshotStore, stop: threading.Event) -> None:
    """Run ``startup`` until it succeeds, leaving ``store`` ready, or ``stop`` is set; wait 1 s after the first
    failure and twice as long after each next one, up to ``MAX_BACKOFF``."""

    def checked() -> None:
        startup()
        if not store.ready and not stop.is_set():  # its full scan failed (e.g. a transient EMFILE): none to serve
            raise StartupIncompleteError("the startup scan failed")

    backoff = ERROR_BACKOFF
    while not (stop.is_set() or guarded("startup", checked, store, stop, backoff)):
        backoff = min(2 * backoff, MAX_BACKOFF)


def run_guarded(serve: Callable[[], None], store: SnapshotStore, stop: threading.Event) -> None:
    """Run the loop ``serve``; if it returns or raises before ``stop`` is set, record that it stopped."""
    reason = "stopped"
    try:
        serve()
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.critical("daemon loop stopped: %s", reason, exc_info=True)
        raise
    finally:
        if not stop.is_set():
            store.set_loop_failed(reason)
