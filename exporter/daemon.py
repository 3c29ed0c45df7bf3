"""The incremental daemon: a startup scan, then work only where something changed.

One worker thread owns the state (the latest Snapshot and the root layouts). Change detection
(:mod:`exporter.watch`, inotify or polling) marks *targets* dirty; once a target's burst of changes has
been quiet for ``debounce`` seconds, the worker rescans the dirty targets together as one batch
(:func:`exporter.incremental.rescan`: only changed trees are walked, the others re-accounted), and
the new immutable Snapshot is published whole. A reconcile full scan (low priority, worker
processes) runs every ``reconcile_interval`` seconds and after a kernel queue overflow.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from exporter.discover import Discovery, RootLayout, discover_external, discover_root
from exporter.incremental import rescan
from exporter.scanner import ScanOptions, full_scan
from exporter.snapshot import SnapshotStore
from exporter.state import Fingerprints, load_state, save_state
from exporter.watch import (
    NETWORK_FILESYSTEMS,
    InotifyWatcher,
    Target,
    WatchLimitError,
    WatchSpec,
    filesystem_type,
    fingerprints,
    site_packages_dirs,
    watch_specs,
)

__all__ = ["Daemon", "DaemonConfig"]

log = logging.getLogger(__name__)

RECONCILE_NICE = 19  # added to the nice value of reconcile scan workers


@dataclass(frozen=True)
class DaemonConfig:
    """Scheduling settings; durations in seconds. ``mode`` is auto, inotify or poll;
    ``reconcile_interval`` 0 disables reconcile scans."""

    debounce: float = 2.0
    mode: str = "auto"
    poll_interval: float = 30.0
    reconcile_interval: float = 21600.0
    state_file: str | None = None
    # Least seconds between two writes of the state file (it is also written on a clean stop).
    state_save_interval: float = 60.0


class Daemon:
    """Keeps ``store`` up to date for what ``discovery`` finds; start() runs it on a background thread.

    Envs outside any root (``--env``, ``environments.txt``) live under the pseudo-root ``""``."""

    def __init__(self, discovery: Discovery, options: ScanOptions, config: DaemonConfig, store: SnapshotStore) -> None:
        self.discovery = discovery
        self.roots = self._roots_of(discovery)
        self.options = options
        self.config = config
        self.store = store
        self.layouts: dict[str, RootLayout] = {}
        self.mode = "poll"
        self._watcher: InotifyWatcher | None = None
        self._prints: dict[Target, tuple[tuple[int, int], ...]] = {}
        self._cond = threading.Condition()
        self._dirty: dict[Target, tuple[float, str]] = {}  # target -> (last change, monotonic s; trigger)
        self._busy = False
        self._changed_while_busy = False
        self._reconcile_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        # Fingerprints taken *before* the walks behind the published numbers: a change made during a
        # walk then differs at the next start and is rescanned, never skipped.
        self._published_prints: dict[Target, tuple[tuple[int, int], ...]] = {}
        self._saved_at = 0.0
        # env prefix -> its site-packages dirs as last listed: listing every env's lib/ for each batch
        # cost more than the batch's own walks. Re-listed for the envs a batch rescans, all on a full scan.
        self._site_dirs: dict[str, list[str]] = {}

    @staticmethod
    def _roots_of(discovery: Discovery) -> list[str]:
        return [*discovery.roots, ""] if discovery.extra_envs or discovery.environments_txt else list(discovery.roots)

    def _discover(self, root: str, layouts: dict[str, RootLayout]) -> RootLayout:
        """The layout of ``root``; for ``""``, the envs no root in ``layouts`` holds."""
        if root:
            return discover_root(root)
        known = [layouts[r] for r in self.discovery.roots if r in layouts]
        external = discover_external(self.discovery.extra_prefixes(), known)
        return external or RootLayout(path="", envs=(), pkgs_dirs=(), envs_container=None, ignored_dirs=())

    def _discover_all(self) -> dict[str, RootLayout]:
        layouts: dict[str, RootLayout] = {}
        for root in self.roots:  # "" comes last: it needs the others
            layouts[root] = self._discover(root, layouts)
        return layouts

    def reconfigure(self, discovery: Discovery, options: ScanOptions) -> None:
        """Take new roots and scan options (SIGHUP); applied by a reconcile scan as soon as possible."""
        with self._cond:
            self.discovery = discovery
            self.roots = self._roots_of(discovery)
            self.options = options
            self._reconcile_requested = True
            self._cond.notify()

    # ---- change detection callbacks (any thread) -------------------------------------------------

    def mark_dirty(self, target: Target, trigger: str = "event") -> None:
        """Note a change of ``target`` now; it is rescanned once quiet for ``debounce`` seconds."""
        with self._cond:
            self._dirty[target] = (time.monotonic(), trigger)
            if self._busy:
                self._changed_while_busy = True
            self._cond.notify()
        if trigger == "event":
            self.store.count_events(events=1)

    def _on_overflow(self) -> None:
        log.warning("inotify queue overflowed: events were lost, running a reconcile scan")
        self.store.count_events(overflows=1)
        with self._cond:
            self._reconcile_requested = True
            self._cond.notify()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the worker to end; True if it did within ``timeout`` seconds."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._thread.join(timeout)
        if self._watcher is not None:
            self._watcher.stop()
        stopped = not self._thread.is_alive()
        if stopped:
            self._save_state()
        return stopped

    # ---- state file -----------------------------------------------------------------------------

    def _specs(self) -> dict[str, WatchSpec]:
        """The watch specs of the current layouts, site-packages dirs from the memo where known."""
        layouts = [self.layouts[r] for r in self.roots if r in self.layouts]
        known, self._site_dirs = self._site_dirs, {}

        def site_dirs(prefix: str) -> list[str]:
            found = known.get(prefix)
            self._site_dirs[prefix] = found if found is not None else site_packages_dirs(prefix)
            return self._site_dirs[prefix]

        return watch_specs(layouts, site_dirs)

    def _current_prints(self) -> dict[Target, tuple[tuple[int, int], ...]]:
        return fingerprints(self._specs().values())

    def _save_state(self) -> None:
        snapshot = self.store.snapshot
        if not self.config.state_file or snapshot is None or not self.store.health().results_verified:
            return
        prints: Fingerprints = {
            (str(t.kind), t.path, t.root): [list(s) for s in stamps] for t, stamps in self._published_prints.items()
        }
        try:
            save_state(self.config.state_file, self.roots, snapshot, prints)
        except OSError as exc:
            log.warning("cannot write the state file %r: %s", self.config.state_file, exc)
        self._saved_at = time.monotonic()

    def _maybe_save_state(self) -> None:
        if time.monotonic() - self._saved_at >= self.config.state_save_interval:
            self._save_state()

    def _warm_start(self) -> bool:
        """Serve the state file's numbers at once and queue what changed since; False to scan fully."""
        if not self.config.state_file:
            return False
        loaded = load_state(self.config.state_file, self.roots)
        self.store.update_watch(state_loaded=loaded.result)
        if loaded.result != "ok" or loaded.snapshot is None:
            return False
        self.store.publish(loaded.snapshot, "state", verified=False)
        saved = {Target(k[0], k[1], k[2]): tuple((s[0], s[1]) for s in v)  # type: ignore[arg-type]
                 for k, v in loaded.fingerprints.items()}
        now = self._current_prints()
        self._published_prints = now
        changed = [t for t in set(now) | set(saved) if now.get(t) != saved.get(t)]
        for target in changed:
            self.mark_dirty(target if target in now else Target("root", target.root, target.root), "state")
        if not changed:
            self.store.update_watch(results_verified=True)
        log.info("state file loaded: serving its numbers, %d target(s) changed since", len(changed))
        return True

    # ---- watching -------------------------------------------------------------------------------

    def _choose_mode(self) -> str:
        if self.config.mode != "auto":
            return self.config.mode
        for root in filter(None, self.roots):
            fstype = filesystem_type(root)
            if fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs"):
                log.info("root %s is on a %s filesystem: polling", root, fstype)
                return "poll"
        return "inotify"

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "poll" and self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        log.info("change detection: %s", mode if mode == "inotify" else f"poll every {self.config.poll_interval} s")
        self.store.update_watch(watch_mode=mode)

    def _sync_watches(self) -> None:
        specs = self._specs()
        if self.mode == "inotify":
            try:
                if self._watcher is None:
                    self._watcher = InotifyWatcher(self.mark_dirty, self._on_overflow)
                self._watcher.sync(specs)
            except WatchLimitError as exc:
                log.warning("%s; falling back to polling", exc)
                self.store.update_watch(watch_limit_reached=True)
                self._set_mode("poll")
        if self.mode == "poll":
            # New targets get their first fingerprint now; known ones keep theirs until the next poll.
            for target, stamp in fingerprints(specs.values()).items():
                self._prints.setdefault(target, stamp)
        self.store.update_watch(watches=self._watcher.count if self._watcher else 0)

    def _poll(self) -> None:
        # Re-listed every poll: without inotify, a site-packages dir that appears without a conda
        # transaction (pip --prefix from another interpreter) is seen no other way.
        self._site_dirs.clear()
        specs = self._specs()
        now = fingerprints(specs.values())
        for target, stamp in now.items():
            if self._prints.get(target) != stamp:
                self.mark_dirty(target, "poll")
        for target in set(self._prints) - set(now):
            self.mark_dirty(Target("root", target.root, target.root), "poll")
        self._prints = now

    # ---- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        self._set_mode(self._choose_mode())
        self.layouts = self._discover_all()
        self._sync_watches()  # before the startup scan, so no change after it goes unseen
        if not self._warm_start():
            self._full_scan("startup", self.options)
        self._save_state()
        now = time.monotonic()
        next_poll = now + self.config.poll_interval
        interval = self.config.reconcile_interval
        next_reconcile = now + interval if interval > 0 else float("inf")
        while not self._stop.is_set():
            if self.mode == "poll" and time.monotonic() >= next_poll:
                self._poll()
                next_poll = time.monotonic() + self.config.poll_interval
            with self._cond:
                now = time.monotonic()
                due = [t for t, (at, _) in self._dirty.items() if at + self.config.debounce <= now]
                wake = min(
                    [at + self.config.debounce for at, _ in self._dirty.values()]
                    + [next_reconcile, next_poll if self.mode == "poll" else float("inf")]
                )
                reconcile = self._reconcile_requested or now >= next_reconcile
                if not due and not reconcile:
                    if wake > now:
                        self._cond.wait(min(wake - now, 3600.0))
                    continue
                batch = {t: self._dirty.pop(t)[1] for t in due}
                self._reconcile_requested = False
                self._busy = True
                self._changed_while_busy = False
            if reconcile:  # a full scan covers the batch too
                self._full_scan("reconcile", self._reconcile_options())
                next_reconcile = time.monotonic() + interval if interval > 0 else float("inf")
            else:
                self._batch(batch)
            if self.config.state_file:
                self._maybe_save_state()
            with self._cond:
                self._busy = False
                if self._changed_while_busy and batch and not reconcile:
                    # A walk of this batch may have seen part of a change made meanwhile: redo it
                    # once that change is quiet, so deltas are never applied on top of a walk that saw them.
                    stamp = time.monotonic()
                    for target, trigger in batch.items():
                        self._dirty.setdefault(target, (stamp, trigger))

    def _reconcile_options(self) -> ScanOptions:
        """A reconcile scan leaves a core to the scrapes: one worker fewer, at the lowest priority.
        Taking twice as long is fine for a check that runs every few hours."""
        return replace(self.options, nice=RECONCILE_NICE, workers=max(1, self.options.workers - 1))

    def _full_scan(self, trigger: str, options: ScanOptions) -> None:
        started = time.monotonic()
        try:
            self.layouts = self._discover_all()
            self._site_dirs.clear()
            prints = self._current_prints()
            snapshot = full_scan([self.layouts[r] for r in self.roots], options)
        except Exception:  # a bug must not kill the daemon: count it, keep serving the old snapshot
            log.exception("%s scan failed", trigger)
            self.store.record_failure(trigger, time.monotonic() - started)
            return
        self.store.publish(snapshot, trigger)
        self._published_prints = prints
        self._sync_watches()
        log.info(
            "%s scan of %d root(s), %d env(s) done in %.2f s with %d error(s)",
            trigger, len(snapshot.roots), len(snapshot.envs), snapshot.duration_seconds, len(snapshot.errors),
        )

    def _batch(self, batch: dict[Target, str]) -> None:
        trigger = next((t for t in ("state", "poll") if t in batch.values()), "event")
        started = time.monotonic()
        for target in batch:
            self._site_dirs.pop(target.path, None)  # pip or conda may have added or removed one
        prints = self._current_prints()
        try:
            old = self.store.snapshot
            if old is None:
                return
            snapshot, self.layouts = rescan(
                old, set(batch), roots=self.roots, current=self.layouts, discover=self._discover,
                options=self.options, started=started,
            )
        except Exception:
            log.exception("%s rescan of %s failed", trigger, sorted(t.path for t in batch))
            self.store.record_failure(trigger, time.monotonic() - started)
            return
        if snapshot is not None:
            self.store.publish(snapshot, trigger)
            for target in batch:  # only the rescanned targets' fingerprints are now behind the numbers
                if target.kind == "root":
                    self._published_prints = prints
                    break
                if target in prints:
                    self._published_prints[target] = prints[target]
            self._sync_watches()
