"""Daemon, inotify: non-recursive watches on the directories of :func:`exporter.daemon.targets.watch_specs`.

Never a recursive watch (shared/FACTS.md: on a big root it costs ~100k watches and, with watchdog's
default mask, drowns in queue overflows).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from exporter.daemon.targets import Target, WatchSpec, stamp

__all__ = ["EVENT_FILTER", "InotifyWatcher", "WatchLimitError"]

log = logging.getLogger(__name__)

# create / delete / move / close-after-write only: no open, access or close-nowrite events, which
# a rescan itself would generate by the thousand.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
]


class WatchLimitError(OSError):
    """The kernel refused a watch: ``max_user_watches`` or ``max_user_instances`` reached."""


class _Handler(FileSystemEventHandler):
    def __init__(self, spec: WatchSpec, on_target: Callable[[Target], None]) -> None:
        self.spec = spec
        self.on_target = on_target

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            if not path:
                continue
            name = "" if path.rstrip("/") == self.spec.path else os.path.basename(path)
            for target in self.spec.targets(name):
                self.on_target(target)


class _OverflowFilter(logging.Filter):
    """watchdog only logs a kernel queue overflow for non-recursive watches: count it from the log."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self.on_overflow = on_overflow

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue overflowed" in record.getMessage():
            self.on_overflow()
        return True


class InotifyWatcher:
    """Non-recursive inotify watches (watchdog, one shared inotify fd) on a set of WatchSpecs.

    ``on_target`` is called from watchdog's thread for each affected target of each event;
    ``on_overflow`` when the kernel queue overflowed (events were lost).
    """

    def __init__(self, on_target: Callable[[Target], None], on_overflow: Callable[[], None]) -> None:
        self._on_target = on_target
        self._observer = InotifyObserver()
        # watched path -> (watch, inode of the directory when watched: a recreated dir needs a new watch)
        self._watches: dict[str, tuple[ObservedWatch, int]] = {}
        self._lock = threading.Lock()
        self._filter = _OverflowFilter(on_overflow)
        logging.getLogger("watchdog.observers.inotify_c").addFilter(self._filter)
        self._observer.start()

    @property
    def count(self) -> int:
        """Watched directories now."""
        return len(self._watches)

    def sync(self, specs: dict[str, WatchSpec]) -> None:
        """Add watches for new specs and drop those no longer wanted. Raises :class:`WatchLimitError`
        when the kernel refuses a watch; a directory that vanished meanwhile is skipped."""
        with self._lock:
            stale = {p for p, (_, ino) in self._watches.items() if p not in specs or stamp(p)[1] != ino}
            for path in stale:
                watch, _ = self._watches.pop(path)
                with contextlib.suppress(KeyError, OSError):  # a gone dir's watch was dropped by the kernel
                    self._observer.unschedule(watch)
            for path, spec in specs.items():
                if path in self._watches:
                    continue
                ino = stamp(path)[1]
                try:
                    watch = self._observer.schedule(
                        _Handler(spec, self._on_target), path, recursive=False, event_filter=EVENT_FILTER
                    )
                    self._watches[path] = (watch, ino)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EMFILE):
                        raise WatchLimitError(exc.errno, f"cannot watch {path!r}: {exc.strerror}") from exc
                    log.debug("not watching %r: %s", path, exc)

    def stop(self) -> None:
        """Remove every watch and stop watchdog's threads."""
        logging.getLogger("watchdog.observers.inotify_c").removeFilter(self._filter)
        self._observer.stop()
        self._observer.join(2.0)
        self._watches.clear()
