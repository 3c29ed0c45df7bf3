"""Daemon, change detection: inotify watches or polled fingerprints over the current layouts' targets.

Either way a change becomes a call ``on_change(target, trigger)``; the scheduler debounces it. Polling
compares each target's fingerprint with the one behind the numbers being served (kept by
:class:`exporter.daemon.warm.PublishedState`), so there is one set of fingerprints, not one per mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from exporter.daemon.inotify import InotifyWatcher, WatchLimitError
from exporter.daemon.targets import (
    Fingerprint,
    Target,
    WatchSpec,
    cache_levels,
    filesystem_type,
    fingerprints,
    site_packages_dirs,
    watch_specs,
)
from exporter.discover.roots import RootLayout
from exporter.scan.budget import is_network
from exporter.snapshot.store import SnapshotStore

__all__ = ["ChangeDetector"]

log = logging.getLogger(__name__)


def _memoised(
    listing: Callable[[str], list[str]], known: Mapping[str, list[str]], kept: dict[str, list[str]]
) -> Callable[[str], list[str]]:
    """``listing`` answered from ``known`` where it holds the path; every answer is put in ``kept``, so a
    memo keeps exactly the paths the last call asked for."""

    def listed(path: str) -> list[str]:
        found = known.get(path)
        kept[path] = found if found is not None else listing(path)
        return kept[path]

    return listed


class ChangeDetector:
    """Watches (or polls) the targets of the layouts it is given.

    ``mode`` is the setting (auto, inotify or poll); :meth:`start` decides the mode in force. The
    site-packages dirs of each env are remembered between calls: listing every env's ``lib/`` for
    each batch cost more than the batch's own walks; so are the channel/platform dirs of each cache
    (listing a cache stats each package dir); :meth:`forget` drops what may have changed. A new
    channel or platform dir changes ``pkgs/`` or a watched one, so its cache is rescanned and
    forgotten: polling need not list caches again.
    """

    def __init__(
        self,
        mode: str,
        poll_interval: float,
        store: SnapshotStore,
        on_change: Callable[[Target, str], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.setting = mode
        self.poll_interval = poll_interval
        self.mode = "poll"
        self._store = store
        self._on_change = on_change
        self._on_overflow = on_overflow
        self._watcher: InotifyWatcher | None = None
        self._site_dirs: dict[str, list[str]] = {}  # env prefix -> its site-packages dirs as last listed
        self._levels: dict[str, list[str]] = {}  # cache dir -> its channel/platform dirs as last listed

    def start(self, roots: Iterable[str]) -> None:
        """Decide the mode: as set, or for auto, polling when a root is on a network filesystem."""
        mode = self.setting
        if mode == "auto":
            mode = "inotify"
            for root in filter(None, roots):
                if is_network(root):
                    log.info("root %s is on a %s filesystem: polling", root, filesystem_type(root))
                    mode = "poll"
                    break
        self._set_mode(mode)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "poll" and self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        log.info("change detection: %s", mode if mode == "inotify" else f"poll every {self.poll_interval} s")
        self._store.update_watch(watch_mode=mode)

    def specs(self, layouts: Iterable[RootLayout]) -> dict[str, WatchSpec]:
        """The watch specs of ``layouts``, site-packages and channel/platform dirs from the memos where
        known."""
        known_sites, self._site_dirs = self._site_dirs, {}
        known_levels, self._levels = self._levels, {}
        return watch_specs(
            layouts,
            _memoised(site_packages_dirs, known_sites, self._site_dirs),
            _memoised(cache_levels, known_levels, self._levels),
        )

    def prints(self, layouts: Iterable[RootLayout]) -> dict[Target, Fingerprint]:
        """Every target's fingerprint now."""
        return fingerprints(self.specs(layouts).values())

    def forget(self, prefixes: Iterable[str] | None = None) -> None:
        """List the site-packages dirs of ``prefixes`` (env prefixes or cache dirs; None: every one)
        and their channel/platform dirs again next time: pip, conda or mamba may have added or
        removed one."""
        if prefixes is None:
            self._site_dirs.clear()
            self._levels.clear()
        else:
            for prefix in prefixes:
                self._site_dirs.pop(prefix, None)
                self._levels.pop(prefix, None)

    def rewatch(self, layouts: list[RootLayout], changed: Iterable[Target] | None) -> dict[Target, Fingerprint]:
        """Before walking ``layouts``: forget what ``changed`` targets may have changed (None: everything),
        watch what the layouts need, and return every target's fingerprint, taken before the walks."""
        self.forget(None if changed is None else (target.path for target in changed))
        self.sync(layouts)
        return self.prints(layouts)

    def sync(self, layouts: Iterable[RootLayout]) -> None:
        """Watch what ``layouts`` need (inotify mode); falls back to polling when the kernel refuses."""
        if self.mode == "inotify":
            try:
                if self._watcher is None:
                    self._watcher = InotifyWatcher(lambda target: self._on_change(target, "event"), self._on_overflow)
                self._watcher.sync(self.specs(layouts))
            except WatchLimitError as exc:
                log.warning("%s; falling back to polling", exc)
                self._store.update_watch(watch_limit_reached=True)
                self._set_mode("poll")
        self._store.update_watch(watches=self._watcher.count if self._watcher else 0)

    def poll(self, layouts: Iterable[RootLayout], published: Mapping[Target, Fingerprint]) -> None:
        """Report every target whose fingerprint differs from ``published`` (a target gone: its root).
        In inotify mode this is the periodic check of what no watch sees (an env's top-level dirs)."""
        # Re-listed every poll in poll mode: without inotify, a site-packages dir that appears without a
        # conda transaction (pip --prefix from another interpreter) is seen no other way. A cache's
        # channel/platform dirs are not: a new one changes a dir whose stamp is compared already.
        if self.mode == "poll":
            self._site_dirs.clear()
        now = self.prints(layouts)
        for target, stamp in now.items():
            if published.get(target) != stamp:
                self._on_change(target, "poll")
        for target in set(published) - set(now):
            self._on_change(Target("root", target.root, target.root), "poll")

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
