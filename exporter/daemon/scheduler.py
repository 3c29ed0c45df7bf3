"""Daemon, scheduler: a startup scan, then work only where something changed.

One worker thread owns the state (the latest Snapshot and the root layouts). Change detection
(:mod:`exporter.daemon.detect`, inotify or polling) marks *targets* dirty; once a target's burst of
changes has been quiet for ``debounce`` seconds (:mod:`exporter.daemon.debounce`), the worker rescans
the dirty targets together as one batch (:func:`exporter.daemon.incremental.rescan`: only changed
trees are walked, the others re-accounted), and the new immutable Snapshot is published whole. New
dirs are watched before they are first walked, so no change after a walk goes unseen. A reconcile
full scan (low priority, worker processes) runs every ``reconcile_interval`` seconds, after a kernel
queue overflow, and after a warm start (loaded numbers count as verified only once it confirmed them).
Fingerprints are compared every ``poll_interval`` seconds in either mode: in poll mode that is the
change detection; with inotify it catches what no watch sees (a file added in an env's top-level
dirs, e.g. ``share/``).
A tree whose walk met a transient error (a network filesystem's ESTALE, EIO, ...) keeps its previous numbers
and is walked again after a back-off (:mod:`exporter.daemon.retry`). Full and reconcile scans keep to the scan
budget (``--scan.max-rate``); rescans of what changed do not: they walk what a change touched (an install
writes those files on the filer itself), once per debounced change, and must show it within seconds.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, replace
from math import inf
from typing import TYPE_CHECKING

from exporter.daemon.debounce import DirtyTargets
from exporter.daemon.detect import ChangeDetector
from exporter.daemon.discovery import RootSet
from exporter.daemon.guard import guarded, retry_startup, run_guarded
from exporter.daemon.incremental import rediscover, rescan
from exporter.daemon.memory import keep_heap_small, release_freed_memory
from exporter.daemon.targets import Target
from exporter.daemon.warm import PublishedState
from exporter.discover.roots import Discovery, RootLayout
from exporter.model import ScanOptions
from exporter.scan.workers import ScanCancelledError
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


def in_order(layouts: dict[str, RootLayout], roots: list[str]) -> list[RootLayout]:
    """The layouts of ``roots`` that ``layouts`` holds, in the order of ``roots``."""
    return [layouts[r] for r in roots if r in layouts]


def failed(store: SnapshotStore, trigger: str, started: float, message: str) -> frozenset[str]:
    """Log ``message`` with the exception being handled and count a failed scan; nothing was walked. A scan
    cancelled because the exporter stops (:class:`ScanCancelledError`) is no failure: one info line."""
    if isinstance(sys.exc_info()[1], ScanCancelledError):
        log.info("%s scan abandoned: the exporter is stopping", trigger)
    else:
        log.exception(message)
        store.record_failure(trigger, time.monotonic() - started)
    return frozenset()


class Daemon:
    """Keeps ``store`` up to date for what ``discovery`` finds; start() runs it on a background thread."""

    def __init__(self, discovery: Discovery, options: ScanOptions, config: DaemonConfig, store: SnapshotStore) -> None:
        self.rootset = RootSet(discovery)
        self.options, self.config, self.store = options, config, store
        self.layouts: dict[str, RootLayout] = {}
        self.detector = ChangeDetector(config.mode, config.poll_interval, store, self.mark_dirty, self._on_overflow)
        self.published = PublishedState(store, config.state_file, STATE_SAVE_INTERVAL)
        self._cond = threading.Condition()  # guards _dirty, _reconcile_requested and reconfiguration
        self._dirty, self._reconcile_requested = DirtyTargets(config.debounce), False
        self._stop, self._next_poll, self._next_reconcile = threading.Event(), 0.0, inf
        self._thread = threading.Thread(
            target=run_guarded, args=(self._serve, store, self._stop), name="daemon", daemon=True)

    @property
    def roots(self) -> list[str]:
        return self.rootset.roots

    def reconfigure(self, discovery: Discovery, options: ScanOptions) -> None:
        """Take new roots and scan options (SIGHUP); applied by a reconcile scan as soon as possible."""
        with self._cond:
            self.rootset, self.options = RootSet(discovery), options
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
        keep_heap_small()  # before the first scan: see exporter.daemon.memory
        self._thread.start()  # runs _serve, guarded: see exporter.daemon.guard

    def request_stop(self) -> None:
        """Tell the worker to end, without waiting (before the scans are cancelled: they then read as stopping)."""
        self._stop.set()
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float) -> bool:
        """Ask the worker to end; True if it did within ``timeout`` seconds."""
        self.request_stop()
        self._thread.join(timeout)
        self.detector.stop()
        if stopped := not self._thread.is_alive():
            self.published.save(self.roots)
        return stopped

    def _startup(self) -> None:
        self.detector.start(self.roots)
        self.layouts = self.rootset.discover_all()
        prints = self.detector.rewatch(in_order(self.layouts, self.roots), None)  # watched before any walk
        changed = self.published.load(self.roots, prints)
        if changed is None:  # (its transient errors are retried as a batch's are)
            walked = self._full_scan("startup", self.options)
            self._dirty.retries.after_scan(self.store.snapshot, walked, time.monotonic())
        for target in changed or ():
            self.mark_dirty(target, "state")
        self.published.save(self.roots)
        release_freed_memory()  # what the startup scan, or the state file's loading, freed

    def _serve(self) -> None:
        retry_startup(self._startup, self.store, self._stop)
        self._next_poll = due_after(self.config.poll_interval)
        self._next_reconcile = due_after(self.config.reconcile_interval)
        while not self._stop.is_set():
            guarded("loop", self._step, self.store, self._stop)

    def _step(self) -> None:
        """One turn of the loop: compare fingerprints if due, then wait for or run one batch or reconcile."""
        if time.monotonic() >= self._next_poll:
            self._next_poll = due_after(self.config.poll_interval)
            self.detector.poll(in_order(self.layouts, self.roots), self.published.prints)
        with self._cond:
            now = time.monotonic()
            batch = self._dirty.take_due(now)
            # after a warm start: the targets changed meanwhile first, then the scan that confirms the rest
            verify = self.published.verify_pending and not batch and not self._dirty.pending("state")
            reconcile = self._reconcile_requested or now >= self._next_reconcile or verify
            if not batch and not reconcile:
                wake = min(self._dirty.next_due(), self._next_reconcile, self._next_poll)
                if wake > now:
                    self._cond.wait(min(wake - now, 3600.0))
                return
            self._reconcile_requested = False
            suspect = frozenset() if reconcile else self._dirty.take_suspects(batch)
            self._dirty.begin_batch()
        walked: frozenset[str] = frozenset()
        try:
            if reconcile:  # a full scan covers the batch too
                self._next_reconcile = due_after(self.config.reconcile_interval)
                walked = self._full_scan("reconcile", reconcile_options(self.options))
            else:
                walked = self._batch(batch, suspect)
            self.published.maybe_save(self.roots)
            release_freed_memory()  # what the scan and the snapshot it replaced held (the scan's locals are gone)
        finally:
            with self._cond:
                self._dirty.end_batch(walked, full=reconcile and bool(walked), scanned=self.store.snapshot,
                                      now=time.monotonic())

    def _full_scan(self, trigger: str, options: ScanOptions) -> frozenset[str]:
        """Scan everything and publish it; the env prefixes and cache dirs walked (none if it failed)."""
        started = time.monotonic()
        self.published.verify_pending = False  # a failed confirmation is retried by the next reconcile
        try:
            self.layouts = self.rootset.discover_all()
            prints = self.detector.rewatch(in_order(self.layouts, self.roots), None)
            snapshot = full_scan(in_order(self.layouts, self.roots), options, previous=self.store.snapshot)
        except Exception:  # a bug must not kill the daemon: count it, keep serving the old snapshot
            return failed(self.store, trigger, started, f"{trigger} scan failed")
        self.store.publish(snapshot, trigger)
        self.published.scanned_all(prints)
        log.info("%s scan of %d root(s), %d env(s) done in %.2f s with %d error(s)", trigger, len(snapshot.roots),
                 len(snapshot.envs), snapshot.duration_seconds, len(snapshot.errors))
        return frozenset(e.prefix for e in snapshot.envs) | frozenset(p.path for p in snapshot.pkgs)

    def _batch(self, batch: dict[Target, str], suspect: frozenset[str]) -> frozenset[str]:
        """Rescan ``batch`` and publish the result; the env prefixes and cache dirs walked."""
        trigger = next((t for t in ("state", "poll", "retry") if t in batch.values()), "event")
        started, old = time.monotonic(), self.store.snapshot
        if old is None:
            return frozenset()  # nothing published yet to rescan from: the startup or next reconcile scan covers it
        try:
            layouts = rediscover(set(batch), self.roots, self.layouts, self.rootset.discover)
            # a new env is watched before its first walk: no change after the walk can be lost
            prints = self.detector.rewatch(in_order(layouts, self.roots), batch)
            result = rescan(old, set(batch), roots=self.roots, layouts=layouts, options=self.options,
                            started=started, suspect=suspect)
        except Exception:
            return failed(self.store, trigger, started, f"{trigger} rescan of {sorted(t.path for t in batch)} failed")
        self.layouts = layouts
        self.store.publish(result.snapshot, trigger, verified=not self.published.unverified)
        self.published.rescanned(batch, prints)
        return result.walked
