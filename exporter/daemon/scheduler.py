"""Daemon, scheduler: a startup scan, then work only where something changed.

One worker thread owns the state (the latest Snapshot and the root layouts). Change detection
(:mod:`exporter.daemon.detect`, inotify or polling) marks *targets* dirty; once a target's burst of
changes has been quiet for ``debounce`` seconds (:mod:`exporter.daemon.debounce`), the worker rescans
the dirty targets together as one batch (:func:`exporter.daemon.incremental.rescan`: only changed
trees are walked, the others re-accounted), and the new immutable Snapshot is published whole. A
reconcile full scan (low priority, worker processes) runs every ``reconcile_interval`` seconds and
after a kernel queue overflow.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from math import inf
from typing import TYPE_CHECKING

from exporter.daemon.debounce import DirtyTargets
from exporter.daemon.detect import ChangeDetector
from exporter.daemon.discovery import RootSet
from exporter.daemon.guard import guarded, retry_startup, run_guarded
from exporter.daemon.incremental import rescan
from exporter.daemon.targets import Target
from exporter.daemon.warm import PublishedState
from exporter.discover.roots import Discovery, RootLayout
from exporter.model import ScanOptions
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore

if TYPE_CHECKING:
    from exporter.config import Settings

__all__ = ["Daemon", "DaemonConfig"]

log = logging.getLogger(__name__)

RECONCILE_NICE = 19  # added to the nice value of reconcile scan workers
STATE_SAVE_INTERVAL = 60.0  # least seconds between two writes of the state file (also written on stop)


@dataclass(frozen=True)
class DaemonConfig:
    """Scheduling settings, from :class:`exporter.config.Settings`; durations in seconds. ``mode`` is
    auto, inotify or poll; ``reconcile_interval`` 0 disables reconcile scans."""

    debounce: float
    mode: str
    poll_interval: float
    reconcile_interval: float
    state_file: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> DaemonConfig:
        return cls(
            debounce=settings.watch_debounce,
            mode=settings.watch_mode,
            poll_interval=settings.watch_poll_interval,
            reconcile_interval=settings.scan_interval,
            state_file=str(settings.state_file) if settings.state_file else None,
        )


def reconcile_options(options: ScanOptions) -> ScanOptions:
    """A reconcile scan leaves a core to the scrapes: one worker fewer, at the lowest priority.
    Taking twice as long is fine for a check that runs every few hours."""
    return replace(options, nice=RECONCILE_NICE, workers=max(1, options.workers - 1))


def due_after(interval: float) -> float:
    """The monotonic time ``interval`` seconds from now; never (inf) for an interval of 0, which disables."""
    return time.monotonic() + interval if interval > 0 else inf


class Daemon:
    """Keeps ``store`` up to date for what ``discovery`` finds; start() runs it on a background thread."""

    def __init__(self, discovery: Discovery, options: ScanOptions, config: DaemonConfig, store: SnapshotStore) -> None:
        self.rootset = RootSet(discovery)
        self.options = options
        self.config = config
        self.store = store
        self.layouts: dict[str, RootLayout] = {}
        self.detector = ChangeDetector(config.mode, config.poll_interval, store, self.mark_dirty, self._on_overflow)
        self.published = PublishedState(store, config.state_file, STATE_SAVE_INTERVAL)
        self._cond = threading.Condition()  # guards _dirty, _reconcile_requested and reconfiguration
        self._dirty = DirtyTargets(config.debounce)
        self._reconcile_requested = False
        self._stop = threading.Event()
        self._next_poll, self._next_reconcile = 0.0, inf
        self._thread = threading.Thread(
            target=run_guarded, args=(self._serve, store, self._stop), name="daemon", daemon=True)

    @property
    def roots(self) -> list[str]:
        return self.rootset.roots

    def reconfigure(self, discovery: Discovery, options: ScanOptions) -> None:
        """Take new roots and scan options (SIGHUP); applied by a reconcile scan as soon as possible."""
        with self._cond:
            self.rootset = RootSet(discovery)
            self.options = options
        self._request_reconcile()

    def mark_dirty(self, target: Target, trigger: str = "event") -> None:
        """Note a change of ``target`` now (any thread); it is rescanned once quiet for ``debounce``
        seconds. A poll sees that a target differs, not when it changed: it never delays a pending one."""
        with self._cond:
            self._dirty.mark(target, trigger, time.monotonic(), restart=trigger != "poll")
            self._cond.notify()
        if trigger == "event":
            self.store.count_events(events=1)

    def _on_overflow(self) -> None:
        log.warning("inotify queue overflowed: events were lost, running a reconcile scan")
        self.store.count_events(overflows=1)
        self._request_reconcile()

    def _request_reconcile(self) -> None:
        with self._cond:
            self._reconcile_requested = True
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()  # runs _serve, guarded: see exporter.daemon.guard

    def stop(self, timeout: float) -> bool:
        """Ask the worker to end; True if it did within ``timeout`` seconds."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout)
        self.detector.stop()
        stopped = not self._thread.is_alive()
        if stopped:
            self.published.save(self.roots)
        return stopped

    def _layouts(self) -> list[RootLayout]:
        return [self.layouts[r] for r in self.roots if r in self.layouts]

    def _startup(self) -> None:
        self.detector.start(self.roots)
        self.layouts = self.rootset.discover_all()
        self.detector.sync(self._layouts())  # before the startup scan, so no change after it goes unseen
        changed = self.published.load(self.roots, self.detector.prints(self._layouts()))
        if changed is None:
            self._full_scan("startup", self.options)
        for target in changed or ():
            self.mark_dirty(target, "state")
        self.published.save(self.roots)

    def _serve(self) -> None:
        retry_startup(self._startup, self.store, self._stop)
        self._next_poll = due_after(self.config.poll_interval)
        self._next_reconcile = due_after(self.config.reconcile_interval)
        while not self._stop.is_set():
            guarded("loop", self._step, self.store, self._stop)

    def _step(self) -> None:
        """One turn of the loop: poll if due, then wait for or run one batch or reconcile."""
        polling = self.detector.mode == "poll"
        if polling and time.monotonic() >= self._next_poll:
            self._next_poll = due_after(self.config.poll_interval)
            self.detector.poll(self._layouts(), self.published.prints)
        with self._cond:
            now = time.monotonic()
            batch = self._dirty.take_due(now)
            reconcile = self._reconcile_requested or now >= self._next_reconcile
            if not batch and not reconcile:
                wake = min(self._dirty.next_due(), self._next_reconcile, self._next_poll if polling else inf)
                if wake > now:
                    self._cond.wait(min(wake - now, 3600.0))
                return
            self._reconcile_requested = False
            self._dirty.begin_batch()
        try:
            if reconcile:  # a full scan covers the batch too
                self._next_reconcile = due_after(self.config.reconcile_interval)
                self._full_scan("reconcile", reconcile_options(self.options))
            else:
                self._batch(batch)
            self.published.maybe_save(self.roots)
        finally:
            with self._cond:
                self._dirty.end_batch({} if reconcile else batch, time.monotonic())

    def _full_scan(self, trigger: str, options: ScanOptions) -> None:
        started = time.monotonic()
        try:
            self.layouts = self.rootset.discover_all()
            self.detector.forget()
            prints = self.detector.prints(self._layouts())
            snapshot = full_scan(self._layouts(), options)
        except Exception:  # a bug must not kill the daemon: count it, keep serving the old snapshot
            log.exception("%s scan failed", trigger)
            self.store.record_failure(trigger, time.monotonic() - started)
            return
        self.store.publish(snapshot, trigger)
        self.published.scanned_all(prints)
        self.detector.sync(self._layouts())
        log.info("%s scan of %d root(s), %d env(s) done in %.2f s with %d error(s)", trigger, len(snapshot.roots),
                 len(snapshot.envs), snapshot.duration_seconds, len(snapshot.errors))

    def _batch(self, batch: dict[Target, str]) -> None:
        trigger = next((t for t in ("state", "poll") if t in batch.values()), "event")
        started, old = time.monotonic(), self.store.snapshot
        if old is None:
            return  # nothing published yet to rescan from: the startup or next reconcile scan covers it
        self.detector.forget(target.path for target in batch)
        prints = self.detector.prints(self._layouts())
        try:
            snapshot, self.layouts = rescan(
                old, set(batch), roots=self.roots, current=self.layouts, discover=self.rootset.discover,
                options=self.options, started=started,
            )
        except Exception:
            log.exception("%s rescan of %s failed", trigger, sorted(t.path for t in batch))
            self.store.record_failure(trigger, time.monotonic() - started)
            return
        self.store.publish(snapshot, trigger)
        self.published.rescanned(batch, prints)
        self.detector.sync(self._layouts())
