"""Walk one directory tree and record what hardlink accounting needs, in flat arrays.

The walk never follows symlinks (a symlink is counted as the non-directory it is), never leaves the
filesystem it started on unless told to, and never raises for trouble inside the tree: unreadable
directories and paths that vanish mid-walk are recorded as :class:`WalkError` and the walk goes on.

Per path it keeps only counters, except for non-directories with ``st_nlink > 1``, whose
``(st_ino, st_nlink, st_blocks)`` go into three ``array('Q')`` columns (24 bytes per hardlinked path),
because whether such an inode is private to the tree is only known once the whole tree is walked.

The per-path loop exists twice with one contract: in C (``exporter/scan/_walker.c``, one ``fstatat`` per
path with the GIL released, about three times faster) and in Python (:mod:`exporter.scan.pywalk`), used
when the extension was not built (no C compiler at install time). ``WALKER`` names the one in use; the tests check both
against ``find``/``du``.
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.model import TRANSIENT_KIND, WalkError
from exporter.scan.budget import WalkBudget, walk_budget
from exporter.scan.reflink import can_reflink

__all__ = [
    "MAX_OPEN_DIRS", "REPLACED_MESSAGE", "TRANSIENT_ERRNOS", "WALKER", "Ownership", "TreeWalk", "errno_kind",
    "error_kind", "walk_tree",
]

try:
    from exporter.scan import _walker as _native
except ImportError:  # built without a C compiler: the Python loop does the same, slower
    _native = None  # type: ignore[assignment]  # (the stub types the module; absent, it is None)

WALKER = "native" if _native is not None else "python"


MAX_OPEN_DIRS = 256
"""Directory fds one walk holds open at most (both walkers): depth-first, a walk needs one per level that
still has subdirectories to open; past this many the shallowest are closed and reopened by name when
needed, so a tree of any depth walks within the usual RLIMIT_NOFILE of 1024."""
REPLACED_MESSAGE = "replaced by another directory between its listing and its opening; not entered"


TRANSIENT_ERRNOS = frozenset(
    {errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.EINTR, errno.ENOTCONN, errno.EREMOTEIO, errno.EHOSTDOWN}
)
"""Errors of a network filesystem (a stale handle, a server not answering in time, a connection lost) that
a later walk may not meet: kind ``transient`` (see :data:`exporter.model.TRANSIENT_KIND`). EIO is among
them: NFS and FUSE give it when the server fails a request; on a local disk it is a bad sector, which a
retry meets again and which keeps the tree's previous numbers, with its last-scan time showing their age."""


def errno_kind(code: int | None) -> str:
    """Classify an errno met while walking: ``permission``, ``vanished``, ``transient`` or ``io``."""
    if code in (errno.EACCES, errno.EPERM):
        return "permission"
    # ENOTDIR/ELOOP: a directory was replaced by a file or symlink between listing and opening it.
    if code in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return "vanished"
    if code in TRANSIENT_ERRNOS:
        return TRANSIENT_KIND
    return "io"


def error_kind(exc: OSError) -> str:
    """Classify an OSError met while walking."""
    if isinstance(exc, PermissionError):
        return "permission"
    if isinstance(exc, FileNotFoundError):
        return "vanished"
    return errno_kind(exc.errno)


@dataclass(frozen=True)
class Ownership:
    """What conda's records say of an env's paths, in the shape the walk needs; index ``i`` is package ``i``.

    ``files[i]``: prefix-relative paths package ``i`` installed (a path two records list belongs to the
    later one); ``relocated[i]``: those whose text had the build prefix rewritten at install (copies by
    necessity, never relinkable); ``cache_entries[i]``: the extracted package dir it came from, if that
    still exists.
    """

    files: Sequence[Sequence[str]]
    relocated: Sequence[frozenset[str]]
    cache_entries: Sequence[str | None]


@dataclass
class TreeWalk:
    """Raw result of walking one tree.

    Byte counters are in bytes; ``private_blocks`` and the ``blocks`` column are in 512-byte units
    (``st_blocks``), so allocated bytes are ``blocks * 512``, exactly what ``du -B1`` adds up.

    On a filesystem that can reflink (:mod:`exporter.scan.reflink`) single-link regular files are mapped
    (hardlinked ones too, once per inode, in a package cache's walk): each extent flagged shared is a row
    of the ``extent_*`` columns (physical start and length in bytes, and the inode when hardlinked, else
    0), and a mapped file's blocks, in ``private_blocks``, ``blocks``, ``cached_single_blocks`` and
    ``uncached_single_blocks``, are its ``st_blocks`` less those extents (what it holds alone);
    ``package_blocks`` and ``untracked_blocks`` keep ``st_blocks``.
    """

    path: str
    dev: int = 0
    dirs: int = 0
    files: int = 0
    hardlinked_files: int = 0
    apparent_bytes: int = 0
    # Blocks of inodes known to be private to this tree during the walk: directories and nlink == 1.
    private_blocks: int = 0
    ino: array[int] = field(default_factory=lambda: array("Q"))
    nlink: array[int] = field(default_factory=lambda: array("Q"))
    blocks: array[int] = field(default_factory=lambda: array("Q"))
    skipped_mounts: int = 0
    errors: list[WalkError] = field(default_factory=list)
    # Filled only when the walk is given an Ownership (see walk_tree); lists are indexed by package.
    untracked_files: int = 0
    untracked_blocks: int = 0
    package_blocks: list[int] = field(default_factory=list)
    cached_single_blocks: list[int] = field(default_factory=list)
    uncached_single_blocks: list[int] = field(default_factory=list)
    extent_start: array[int] = field(default_factory=lambda: array("Q"))
    extent_length: array[int] = field(default_factory=lambda: array("Q"))
    extent_ino: array[int] = field(default_factory=lambda: array("Q"))

    def merge(self, other: TreeWalk) -> None:
        """Add ``other`` (a disjoint tree on the same filesystem) into this one."""
        self.dirs += other.dirs
        self.files += other.files
        self.hardlinked_files += other.hardlinked_files
        self.apparent_bytes += other.apparent_bytes
        self.private_blocks += other.private_blocks
        self.ino.extend(other.ino)
        self.nlink.extend(other.nlink)
        self.blocks.extend(other.blocks)
        self.skipped_mounts += other.skipped_mounts
        self.errors.extend(other.errors)
        self.extent_start.extend(other.extent_start)
        self.extent_length.extend(other.extent_length)
        self.extent_ino.extend(other.extent_ino)


def walk_tree(
    top: str,
    exclude: frozenset[str] = frozenset(),
    cross_filesystems: bool = False,
    ownership: Ownership | None = None,
    *,
    map_hardlinked: bool = False,
) -> TreeWalk:
    """Walk ``top`` (a directory, itself counted) and everything below it.

    ``exclude`` holds absolute directory paths (as ``top``/…/name strings) that are skipped entirely,
    the directory itself included: that is how the base env leaves out ``envs/`` and ``pkgs/``.
    Directories on another filesystem are skipped (and counted in ``skipped_mounts``) unless
    ``cross_filesystems``; then the hardlink identity would need ``st_dev`` too, so rows of other
    devices are kept apart by the caller, which only enables it for trees it knows are single-device.

    Every path below ``top`` is read relative to its directory's open fd, and every directory is opened
    by name from its parent's fd without following a symlink and checked to be the (device, inode) its
    listing showed; one swapped meanwhile is a ``vanished`` error and is not entered. So no symlink an
    env owner swaps in during the walk leads it out of ``top``, and paths longer than ``PATH_MAX`` are
    walked like any other (as ``du`` does). At most :data:`MAX_OPEN_DIRS` directory fds are held.

    With ``ownership``, non-directories that no package installed, outside ``conda-meta/``, are
    counted as *untracked* (each inode once); ``package_blocks[i]`` adds up the blocks of package
    ``i``'s paths; and its regular files with a single link that are not relocated add their blocks to
    ``cached_single_blocks[i]`` when the package's cache entry holds a regular file at the same path
    (a copy of it), else to ``uncached_single_blocks[i]``. Without it the walk does no per-path
    string work. All blocks are 512-byte units. On a filesystem that can reflink, single-link files are
    mapped, and with ``map_hardlinked`` (a package cache: the one place each hardlinked file conda installs
    has a link, so mapped there once, not in every env linking it) hardlinked ones too (see
    :class:`TreeWalk`).

    Inside a :func:`exporter.scan.budget.budgeted` block whose budget applies to ``top``, each path's ``stat``,
    and each look-up of a single-link file in its package's cache entry, is paid for from the scan budget
    first: the walk sleeps as long as the budget says.
    """
    result = TreeWalk(path=top)
    try:
        top_stat = os.lstat(top)
    except OSError as exc:
        result.errors.append(WalkError(error_kind(exc), top, exc.strerror or str(exc)))
        return result
    if not stat.S_ISDIR(top_stat.st_mode):
        result.errors.append(WalkError("vanished", top, "not a directory"))
        return result
    result.dev = top_stat.st_dev
    result.dirs = 1
    result.apparent_bytes = top_stat.st_size
    result.private_blocks = top_stat.st_blocks
    map_extents = can_reflink(top, top_stat.st_dev)
    with walk_budget(top, top_stat.st_dev) as budget:
        if _native is not None:
            _walk_native(
                result, top_stat.st_ino, exclude, cross_filesystems, ownership, map_extents=map_extents,
                map_hardlinked=map_extents and map_hardlinked, budget=budget,
            )
        else:
            from exporter.scan.pywalk import PythonWalk  # only where the extension is missing (or a test says so)

            walk = PythonWalk(
                result, exclude, cross_filesystems, ownership, map_extents=map_extents,
                map_hardlinked=map_extents and map_hardlinked, budget=budget,
            )
            walk.run(top_stat.st_ino)
    return result


def _walk_native(
    result: TreeWalk,
    ino: int,
    exclude: frozenset[str],
    cross: bool,
    ownership: Ownership | None,
    *,
    map_extents: bool,
    map_hardlinked: bool,
    budget: WalkBudget | None,
) -> None:
    assert _native is not None
    files, relocated, entries = (
        (ownership.files, ownership.relocated, ownership.cache_entries) if ownership else (None, (), ())
    )
    walked = _native.walk(
        os.fsencode(result.path), result.dev, ino, exclude, cross, files, relocated, entries, map_extents,
        map_hardlinked, *((budget.fd, budget.ns_per_path, budget.batch) if budget else (-1, 0, 0)),
    )
    result.dirs += walked.dirs
    result.files += walked.files
    result.hardlinked_files += walked.hardlinked_files
    result.apparent_bytes += walked.apparent_bytes
    result.private_blocks += walked.private_blocks
    result.skipped_mounts = walked.skipped_mounts
    result.untracked_files = walked.untracked_files
    result.untracked_blocks = walked.untracked_blocks
    result.ino.frombytes(walked.ino)
    result.nlink.frombytes(walked.nlink)
    result.blocks.frombytes(walked.blocks)
    result.errors.extend(
        WalkError("vanished", path, REPLACED_MESSAGE)
        if code == _native.REPLACED
        else WalkError(errno_kind(code), path, os.strerror(code))
        for code, path in walked.errors
    )
    result.package_blocks = walked.package_blocks
    result.cached_single_blocks = walked.cached_single_blocks
    result.uncached_single_blocks = walked.uncached_single_blocks
    result.extent_start.frombytes(walked.extent_start)
    result.extent_length.frombytes(walked.extent_length)
    result.extent_ino.frombytes(walked.extent_ino)
