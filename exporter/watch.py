"""Change detection: which directories to watch, what a change in each means, and how to see it.

Never a recursive watch (shared/FACTS.md: on a big root it costs ~100k watches and, with watchdog's
default mask, drowns in queue overflows). Per root we watch only where installers write on every
transaction: the root dir, ``envs/``, ``pkgs/``, each env's ``conda-meta/`` and
``lib/python*/site-packages`` (pip), plus each not-yet-env dir of ``envs/`` (to see ``conda-meta/``
appear). Each change maps to a :class:`Target`: an env to rescan, a package cache to rescan, or a root
to re-discover. The same map drives polling (:func:`fingerprints`) where inotify cannot work.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

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

from exporter.discover import RootLayout

__all__ = [
    "EVENT_FILTER",
    "NETWORK_FILESYSTEMS",
    "InotifyWatcher",
    "Target",
    "WatchLimitError",
    "WatchSpec",
    "filesystem_type",
    "fingerprints",
    "watch_specs",
]

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

NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
     "9p", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "davfs", "fuse.davfs2"}
)
"""Filesystem types (``/proc/self/mountinfo``) whose changes by other hosts inotify cannot see."""


@dataclass(frozen=True, order=True)
class Target:
    """Something to bring up to date: ``env`` (``path`` is its prefix), ``pkgs`` (a cache dir) or
    ``root`` (re-discover the root at ``path``: envs may have appeared or gone)."""

    kind: Literal["env", "pkgs", "root"]
    path: str
    root: str


Role = Literal["root", "envs", "candidate", "pkgs", "meta", "site"]


@dataclass(frozen=True)
class WatchSpec:
    """One watched directory, what it is in its root, and (for meta/site) the env ``prefix``."""

    path: str
    role: Role
    root: str
    prefix: str = ""

    def targets(self, name: str) -> list[Target]:
        """What a change of the entry ``name`` in this directory ("" for the directory itself) affects."""
        if self.role == "root":
            if name in ("envs", "pkgs", "conda-meta", ""):
                return [Target("root", self.root, self.root)]
            return [Target("env", self.root, self.root)]
        if self.role == "envs":
            found = [Target("root", self.root, self.root)]
            if name:
                found.append(Target("env", os.path.join(self.path, name), self.root))
            return found
        if self.role == "candidate":
            return [Target("root", self.root, self.root)]
        if self.role == "pkgs":
            return [Target("pkgs", self.path, self.root)]
        return [Target("env", self.prefix, self.root)]


def site_packages_dirs(prefix: str) -> list[str]:
    """``PREFIX/lib/python*/site-packages`` directories that exist (symlinks excluded).

    Names are matched before anything is stat'ed: ``lib/`` of an env holds thousands of entries, and
    a glob would test each one for being a directory."""
    lib = os.path.join(prefix, "lib")
    try:
        names = [entry.name for entry in os.scandir(lib) if entry.name.startswith("python")]
    except OSError:
        return []
    found = (os.path.join(lib, name, "site-packages") for name in names)
    return sorted(p for p in found if os.path.isdir(p) and not os.path.islink(p))


def watch_specs(
    layouts: Iterable[RootLayout], site_dirs: Callable[[str], list[str]] = site_packages_dirs
) -> dict[str, WatchSpec]:
    """Every directory to watch for ``layouts``, by path. ``site_dirs`` lists an env's site-packages
    directories (the daemon passes a memo of :func:`site_packages_dirs`)."""
    specs: dict[str, WatchSpec] = {}

    def add(spec: WatchSpec) -> None:
        specs.setdefault(spec.path, spec)

    for layout in layouts:
        root = layout.path
        add(WatchSpec(root, "root", root))
        if layout.envs_container:
            add(WatchSpec(layout.envs_container, "envs", root))
        for pkgs_dir in layout.pkgs_dirs:
            add(WatchSpec(pkgs_dir, "pkgs", root))
        for ignored in layout.ignored_dirs:
            add(WatchSpec(ignored, "candidate", root))
        for env in layout.envs:
            add(WatchSpec(os.path.join(env.prefix, "conda-meta"), "meta", root, env.prefix))
            for site in site_dirs(env.prefix):
                add(WatchSpec(site, "site", root, env.prefix))
    return specs


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.lstat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)


def fingerprints(specs: Iterable[WatchSpec]) -> dict[Target, tuple[tuple[int, int], ...]]:
    """Poll-mode fingerprints: per target, ``(mtime_ns, ino)`` of its watched dirs (and of each env's
    ``conda-meta/history``). A changed fingerprint means the target changed. Cost: one ``lstat`` per
    watched dir, ~5 µs each."""
    stamps: dict[Target, list[tuple[int, int]]] = {}
    for spec in sorted(specs, key=lambda s: s.path):
        stamp = _stamp(spec.path)
        for target in spec.targets(""):
            stamps.setdefault(target, []).append(stamp)
        if spec.role == "meta":
            target = Target("env", spec.prefix, spec.root)
            stamps.setdefault(target, []).append(_stamp(os.path.join(spec.path, "history")))
    return {target: tuple(values) for target, values in stamps.items()}


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """Type of the filesystem holding ``path`` (longest mount point prefix), "" if unknown."""
    best, fstype = "", ""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mount_point = fields[4].encode().decode("unicode_escape")
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, right.split()[0]
    return fstype


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
            stale = {p for p, (_, ino) in self._watches.items() if p not in specs or _stamp(p)[1] != ino}
            for path in stale:
                watch, _ = self._watches.pop(path)
                with contextlib.suppress(KeyError, OSError):  # a gone dir's watch was dropped by the kernel
                    self._observer.unschedule(watch)
            for path, spec in specs.items():
                if path in self._watches:
                    continue
                ino = _stamp(path)[1]
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
