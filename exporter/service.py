"""Scheduling: keep the SnapshotStore fresh with a startup scan and periodic full rescans.

Roots are re-discovered at every full scan, so envs that appear or disappear are picked up then.
"""

from __future__ import annotations

import logging
import threading
import time

from exporter.discover import discover_root
from exporter.scanner import ScanOptions, full_scan
from exporter.snapshot import SnapshotStore

__all__ = ["ScanScheduler"]

log = logging.getLogger(__name__)


class ScanScheduler:
    """Runs full scans of ``roots`` on a background thread: one at start, then every ``interval``
    seconds (0: start only). Never runs two scans at once; a failed scan keeps the old snapshot."""

    def __init__(self, roots: list[str], options: ScanOptions, interval: float, store: SnapshotStore) -> None:
        self.roots = roots
        self.options = options
        self.interval = interval
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scanner", daemon=True)

    def scan_once(self, trigger: str) -> None:
        """Discover and scan every root now, then publish (or count the failure)."""
        started = time.monotonic()
        try:
            layouts = [discover_root(root) for root in self.roots]
            snapshot = full_scan(layouts, self.options)
        except Exception:  # a bug must not kill the daemon: count it, keep serving the old snapshot
            log.exception("%s scan failed", trigger)
            self.store.record_failure(trigger, time.monotonic() - started)
            return
        self.store.publish(snapshot, trigger)
        log.info(
            "%s scan of %d root(s), %d env(s) done in %.2f s with %d error(s)",
            trigger,
            len(snapshot.roots),
            len(snapshot.envs),
            snapshot.duration_seconds,
            len(snapshot.errors),
        )

    def _loop(self) -> None:
        self.scan_once("startup")
        while self.interval > 0 and not self._stop.wait(self.interval):
            self.scan_once("reconcile")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the loop to end; True if it did within ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
