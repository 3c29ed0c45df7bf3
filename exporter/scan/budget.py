"""Scan stage, the scan budget: at most N paths ``stat``-ed per second over all the walks of a scan.

A full or reconcile scan on a shared filer spreads over time instead of hammering it (``--scan.max-rate``).
The budget is one token bucket shared by every worker process of the scan: a small file (in ``/dev/shm``)
holding the monotonic time from which the next path may be read, updated under ``flock``. A walk takes
tokens in batches before reading the paths they pay for (the C walker without the GIL and without calling
into Python: it maps the same file), sleeps until their time comes, and gives back what a batch did not
use when it ends. There is no burst credit: time not used while a walk did something else is lost, so no
second can see more than N paths plus the batches in flight (one per worker and one being started), and
the batch is sized to keep those within 5% of N (:func:`batch_size`).

Only the per-path ``stat`` of the walk is counted (what a filer answers once per path): not the one
``fstat`` of each directory opened, nor the reading of ``conda-meta/*.json``.

In ``auto`` mode the budget applies to trees on network filesystems only (``/proc/self/mountinfo``), the
same filesystems on which the daemon polls instead of watching.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import logging
import mmap
import os
import re
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from exporter.model import ScanOptions

__all__ = [
    "NETWORK_FILESYSTEMS",
    "Bucket",
    "WalkBudget",
    "batch_size",
    "budget_totals",
    "budgeted",
    "is_network",
    "mount_type",
    "scan_budget",
    "walk_budget",
]

log = logging.getLogger(__name__)

NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
     "9p", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "davfs", "fuse.davfs2"}
)
"""Filesystem types (``/proc/self/mountinfo``) whose changes by other hosts inotify cannot see, and where
every ``stat`` may be a round trip to a server other people use."""

# The bucket file: next free time (CLOCK_MONOTONIC ns, signed), wait ns added up, paths granted.
_LAYOUT = struct.Struct("=qQQ")
_FILE_SIZE = 4096
_MAX_BATCH = 256


_MOUNTINFO_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes space, tab, newline and \ as \ooo


def mount_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """Type of the filesystem holding ``path`` (longest mount point prefix), "" if unknown."""
    best, fstype = "", ""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")  # (not splitlines(), for the same reason as below)
    except OSError:
        return ""
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split(" ")  # (not split(): it also splits at U+2028, U+0085, ... in a path)
        if not sep or len(fields) < 5:
            continue
        # (only the octal escapes are undone: other bytes, non-UTF-8 ones too, stay as os.fsdecode has them,
        # as in ``path``; anyone can mount a FUSE filesystem at a path of any bytes)
        mount_point = _MOUNTINFO_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, right.split(" ")[0]
    return fstype


def is_network(path: str) -> bool:
    """Whether ``path`` lies on a network filesystem (NFS, CIFS, Ceph, Lustre, GPFS, sshfs, ...)."""
    fstype = mount_type(path)
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs")


_network_devices: dict[int, bool] = {}  # st_dev -> on a network filesystem (asked once per device and process)


def batch_size(rate: int, workers: int) -> int:
    """Paths taken at once: at most one batch per worker (and one more being started) can be in flight in
    any second beyond the rate, so they are kept within 5% of it; 1 to 256."""
    return max(1, min(_MAX_BATCH, rate // (20 * (workers + 1))))


@dataclass(frozen=True)
class WalkBudget:
    """What one walk is given: the bucket file's fd (opened for this walk), nanoseconds per path, batch."""

    fd: int
    ns_per_path: int
    batch: int


class Bucket:
    """The shared bucket file mapped in this process (any walker's Python side, and the tests)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.map = mmap.mmap(fd, _FILE_SIZE)

    def take(self, paths: int, ns_per_path: int) -> float:
        """Reserve ``paths`` paths and sleep until they may be read; the seconds slept."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            next_free, waited, granted = _LAYOUT.unpack_from(self.map)
            now = time.monotonic_ns()
            start: int = max(next_free, now)
            _LAYOUT.pack_into(self.map, 0, start + paths * ns_per_path, waited + start - now, granted + paths)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        if start > now:
            time.sleep((start - now) / 1e9)
        return (start - now) / 1e9

    def refund(self, paths: int, ns_per_path: int) -> None:
        """Give back ``paths`` reserved and not read (a walk ended mid-batch)."""
        if paths <= 0:
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            next_free, waited, granted = _LAYOUT.unpack_from(self.map)
            _LAYOUT.pack_into(self.map, 0, next_free - paths * ns_per_path, waited, granted - paths)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def read(self) -> tuple[float, int]:
        """(seconds waited, paths granted) so far, over every process."""
        _, waited, granted = _LAYOUT.unpack_from(self.map)
        return waited / 1e9, granted

    def close(self) -> None:
        self.map.close()


_current: contextvars.ContextVar[ScanOptions | None] = contextvars.ContextVar("scan_budget", default=None)


@contextlib.contextmanager
def budgeted(options: ScanOptions) -> Iterator[None]:
    """Walks in this block (in this thread) take tokens from ``options``'s budget, if it has one. Each task
    of a scan runs in one (:mod:`exporter.account.trees`), so cache chunks need not pass it down."""
    token = _current.set(options if options.budget_file and options.max_rate > 0 else None)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def walk_budget(top: str, dev: int) -> Iterator[WalkBudget | None]:
    """The budget of a walk of ``top`` (on device ``dev``) in the current :func:`budgeted` block, its fd
    open while the walk runs; None when unbudgeted (no budget, or auto mode and a local filesystem)."""
    options = _current.get()
    if options is None:
        yield None
        return
    if options.max_rate_network_only:
        network = _network_devices.get(dev)
        if network is None:
            network = _network_devices[dev] = is_network(top)
        if not network:
            yield None
            return
    try:
        fd = os.open(options.budget_file, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:  # the scan's owner removed it (stopping): walk unbudgeted rather than fail
        log.warning("scan budget %s cannot be opened (%s): walking %s unbudgeted", options.budget_file, exc, top)
        yield None
        return
    try:
        yield WalkBudget(fd, 1_000_000_000 // options.max_rate, options.budget_batch)
    finally:
        os.close(fd)


class _Totals:
    """What the budgets of this process's full scans did, for the self-metrics: the rate in force at the last
    one and the seconds waited since start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rate = 0
        self.waited = 0.0


_totals = _Totals()


def budget_totals() -> tuple[int, float]:
    """(paths per second in force at the last full scan, 0: unlimited; seconds its walks waited since start)."""
    with _totals.lock:
        return _totals.rate, _totals.waited


def _budget_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


@contextlib.contextmanager
def scan_budget(options: ScanOptions, trees: Iterable[str] = ()) -> Iterator[ScanOptions]:
    """Open a bucket for one full scan at ``options.max_rate`` and give the options its walks take tokens
    with (the same options when the rate is 0: unlimited; in auto mode, also when none of the ``trees`` to
    walk is on a network filesystem). The rate in force is kept for :func:`budget_totals`, and so are, when the
    block ends, the seconds waited; the file is removed."""
    rate = options.max_rate
    if options.max_rate_network_only and not any(is_network(tree) for tree in trees):
        rate = 0
    with _totals.lock:
        _totals.rate = rate
    if rate <= 0:
        yield replace(options, budget_file="")
        return
    path = os.path.join(_budget_dir(), f"conda-exporter-budget-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # a scan without its budget is better than no scan: say so, in the log and the gauge
        log.warning("scan budget file %s cannot be made (%s): this scan runs unbudgeted", path, exc)
        with _totals.lock:
            _totals.rate = 0
        yield replace(options, budget_file="")
        return
    bucket: Bucket | None = None
    try:
        os.ftruncate(fd, _FILE_SIZE)
        bucket = Bucket(fd)
        _LAYOUT.pack_into(bucket.map, 0, time.monotonic_ns(), 0, 0)
        yield replace(options, budget_file=path, budget_batch=batch_size(options.max_rate, options.workers))
    finally:
        if bucket is not None:
            waited, _ = bucket.read()
            bucket.close()
            with _totals.lock:
                _totals.waited += waited
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
