"""Daemon, inotify: non-recursive watches on the directories of :func:`exporter.daemon.targets.watch_specs`.

The kernel reports lost events only as an ``IN_Q_OVERFLOW`` record in the same queue as the events, and
watchdog throws that record away unread (4.0 to 7.0) or passes it on only through undocumented internals
(7.1), so we read the inotify fd ourselves: inotify(7) is a stable kernel ABI, and for non-recursive watches
it is all watchdog did for us.

Never a recursive watch (shared/FACTS.md: on a big root it costs ~100k watches and, with a wide event
mask, drowns in queue overflows).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Iterator

from exporter.daemon.targets import Target, WatchSpec, stamp

__all__ = ["EVENT_MASK", "InotifyWatcher", "WatchLimitError"]

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000

# create / delete / move / close-after-write only: no open, access or close-nowrite events, which
# a rescan itself would generate by the thousand.
EVENT_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF
# Paths are realpaths already; a symlink or a file in place of a watched dir is not watched.
_WATCH_FLAGS = EVENT_MASK | IN_ONLYDIR | IN_DONT_FOLLOW

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of NUL-padded name
_READ_SIZE = 64 * 1024  # at least one event with the longest name (16 + NAME_MAX + 1 bytes)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int


class WatchLimitError(OSError):
    """The kernel refused a watch: ``max_user_watches`` or ``max_user_instances`` reached."""


def _checked(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EMFILE):
            raise WatchLimitError(code, f"{what}: {os.strerror(code)}")
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """``(wd, mask, name)`` of each event read; name "" for the watched directory itself."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        yield wd, mask, os.fsdecode(data[offset : offset + length].partition(b"\0")[0])
        offset += length


class InotifyWatcher:
    """Non-recursive inotify watches (one inotify fd, one reader thread) on a set of WatchSpecs.

    ``on_target`` is called from the reader thread for each affected target of each event;
    ``on_overflow`` when the kernel queue overflowed (events were lost). Raises :class:`WatchLimitError`
    when the kernel refuses an inotify instance (``max_user_instances``).
    """

    def __init__(self, on_target: Callable[[Target], None], on_overflow: Callable[[], None]) -> None:
        self._on_target = on_target
        self._on_overflow = on_overflow
        self._fd = _checked(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._wake_r, self._wake_w = os.pipe()
        # watched path -> (watch descriptor, inode of the directory when watched: a recreated dir needs a
        # new watch); and per descriptor its specs (two paths of one directory, e.g. bind mounts, share one)
        self._watches: dict[str, tuple[int, int]] = {}
        self._specs: dict[int, dict[str, WatchSpec]] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._read_loop, name="inotify-reader", daemon=True)
        self._thread.start()

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
                wd, _ = self._watches.pop(path)
                sharing = self._specs.get(wd, {})
                sharing.pop(path, None)
                if not sharing:
                    self._specs.pop(wd, None)
                    _libc.inotify_rm_watch(self._fd, wd)  # EINVAL if the kernel dropped it (dir gone): fine
            for path, spec in specs.items():
                if path in self._watches:
                    self._specs[self._watches[path][0]][path] = spec
                    continue
                ino = stamp(path)[1]
                try:
                    wd = _checked(_libc.inotify_add_watch(self._fd, os.fsencode(path), _WATCH_FLAGS), path)
                except WatchLimitError as exc:
                    raise WatchLimitError(exc.errno, f"cannot watch {path!r}: {exc.strerror}") from exc
                except OSError as exc:
                    log.debug("not watching %r: %s", path, exc)
                    continue
                self._watches[path] = (wd, ino)
                self._specs.setdefault(wd, {})[path] = spec

    def stop(self) -> None:
        """Remove every watch and stop the reader thread."""
        if self._stopped:
            return
        self._stopped = True
        os.write(self._wake_w, b"x")
        self._thread.join(2.0)
        with self._lock:
            self._watches.clear()
            self._specs.clear()
        if self._thread.is_alive():  # stuck in a callback: closing now could let it read a reused fd number
            log.warning("inotify reader did not stop within 2 s; leaving its fd open")
            return
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)  # closing the inotify fd removes its watches

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                continue
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        overflowed = False
        affected: list[tuple[list[WatchSpec], str]] = []
        with self._lock:
            for wd, mask, name in _events(data):
                if mask & IN_Q_OVERFLOW:  # wd -1: the queue was full, events after it were dropped
                    overflowed = True
                elif mask & IN_IGNORED:  # the watch is gone (rm_watch, directory deleted, unmounted):
                    for path in self._specs.pop(wd, {}):  # the next sync watches what is still wanted again
                        if self._watches.get(path, (None,))[0] == wd:
                            del self._watches[path]
                elif wd in self._specs:
                    affected.append((list(self._specs[wd].values()), name))
        for specs, name in affected:
            for spec in specs:
                for target in spec.targets(name):
                    self._call(self._on_target, target)
        if overflowed:
            self._call(self._on_overflow)

    @staticmethod
    def _call(callback: Callable[..., None], *args: Target) -> None:
        try:
            callback(*args)
        except Exception:  # the reader must outlive a failing callback, or every later event is lost
            log.exception("inotify callback %r failed", callback)
