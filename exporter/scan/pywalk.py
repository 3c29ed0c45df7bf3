"""The walker's per-path loop in Python: the fallback where ``exporter/scan/_walker.c`` was not built.

Same contract as the C loop (see :func:`exporter.scan.walk.walk_tree`), and the same structure, so the two
can be read side by side: a stack of open directories, each listed once from its fd (every entry
``stat()`` with ``dir_fd``), each subdirectory opened by name from its parent's fd without following a
symlink and checked to be the (dev, ino) its listing showed, at most
:data:`~exporter.scan.walk.MAX_OPEN_DIRS` fds held.
"""

from __future__ import annotations

import os
import stat

from exporter.model import BLOCK_SIZE, METADATA_DIR, WalkError
from exporter.scan.budget import Bucket, WalkBudget
from exporter.scan.reflink import shared_extents
from exporter.scan.walk import MAX_OPEN_DIRS, REPLACED_MESSAGE, Ownership, TreeWalk, error_kind

__all__ = ["PythonWalk"]

_OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


_OPEN_STEP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _in_cache(entry: str | None, rel: str) -> bool:
    """Is ``rel`` a regular file in cache entry ``entry`` (a package dir of a known cache), reached
    following no symlink below it? (``_walker.c``'s ``in_cache`` opens the directory once per listing with
    openat2, then looks each file up with ``fstatat``; here each look-up opens it step by step.)"""
    if entry is None:
        return False
    *dirs, name = rel.split("/")
    try:
        fd = os.open(entry, _OPEN_STEP_FLAGS)
    except OSError:
        return False
    try:
        for step in dirs:
            deeper = os.open(step, _OPEN_STEP_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = deeper
        return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
    finally:
        os.close(fd)


class _Spender:
    """The walk's side of the scan budget, as ``_walker.c``'s ``budget_take``: a batch of paths taken from the
    shared bucket before they are read, what it did not use given back at the end."""

    __slots__ = ("batch", "bucket", "left", "ns_per_path")

    def __init__(self, budget: WalkBudget) -> None:
        self.bucket = Bucket(budget.fd)
        self.ns_per_path = budget.ns_per_path
        self.batch = budget.batch
        self.left = 0

    def spend(self) -> None:
        """Pay for one path, sleeping for a new batch when the last one is used up."""
        if not self.left:
            self.bucket.take(self.batch, self.ns_per_path)
            self.left = self.batch
        self.left -= 1

    def close(self) -> None:
        self.bucket.refund(self.left, self.ns_per_path)
        self.bucket.close()


class _Frame:
    """A directory on the walk's stack (see ``_walker.c``'s ``frame``): its fd while it has subdirectories
    left to open (else -1), its name in the frame below (its path for top), the (dev, ino) it was opened
    as, its path (for errors and ``exclude``) and its subdirectories still to walk, as (name, dev, ino)."""

    __slots__ = ("dev", "fd", "ino", "name", "path", "pending")

    def __init__(self, fd: int, name: str, dev: int, ino: int, path: str) -> None:
        self.fd = fd
        self.name = name
        self.dev = dev
        self.ino = ino
        self.path = path
        self.pending: list[tuple[str, int, int]] = []


class PythonWalk:
    """The per-path loop without the extension: the same contract, and the same stack of open
    directories, as ``_walker.walk`` (each directory listed by a :class:`_Lister`)."""

    def __init__(
        self,
        result: TreeWalk,
        exclude: frozenset[str],
        cross_filesystems: bool,
        ownership: Ownership | None,
        *,
        map_extents: bool = False,
        map_hardlinked: bool = False,
        budget: WalkBudget | None = None,
    ) -> None:
        self.result = result
        self.lister = _Lister(
            result, exclude, cross_filesystems, ownership, map_extents=map_extents, map_hardlinked=map_hardlinked
        )
        self.lister.spender = _Spender(budget) if budget is not None else None
        self.frames: list[_Frame] = []
        self.open_fds = 0

    def run(self, top_ino: int) -> None:
        result = self.result
        frames = self.frames
        try:
            fd = self._open_at(None, result.path, result.dev, top_ino, result.path)
            if fd is None:
                return
            self._push(_Frame(fd, result.path, result.dev, top_ino, result.path))
            while frames:
                frame = frames[-1]
                if not frame.pending:
                    self._pop()
                    continue
                parent = self._frame_fd(len(frames) - 1)
                if parent is None:  # the error is recorded; what is below cannot be reached safely
                    self._pop()
                    continue
                name, dev, ino = frame.pending.pop()
                path = f"{frame.path}/{name}"
                fd = self._open_at(parent, name, dev, ino, path)
                if not frame.pending:  # after its last subdirectory a frame needs no fd
                    self._close(frame)
                if fd is not None:
                    self._push(_Frame(fd, name, dev, ino, path))
        finally:
            while frames:
                self._pop()
            if self.lister.spender is not None:
                self.lister.spender.close()

    def _open_at(self, parent: int | None, name: str, dev: int, ino: int, path: str) -> int | None:
        """Open ``name`` in the directory ``parent`` (``name`` is top's path when None) without following
        a symlink, and check that it is the directory (dev, ino) seen before; None (error recorded) if not."""
        errors = self.result.errors
        try:
            fd = os.open(name, _OPEN_DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
            return None
        try:
            opened = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
            return None
        if opened.st_dev == dev and opened.st_ino == ino:
            return fd
        os.close(fd)
        errors.append(WalkError("vanished", path, REPLACED_MESSAGE))
        return None

    def _frame_fd(self, index: int) -> int | None:
        """The fd of frame ``index``, reopened by name from the nearest open frame below it if closed."""
        frames = self.frames
        if frames[index].fd >= 0:
            return frames[index].fd
        start = index
        while start > 0 and frames[start - 1].fd < 0:
            start -= 1
        fd: int | None = frames[start - 1].fd if start > 0 else None
        for k in range(start, index + 1):
            frame = frames[k]
            opened = self._open_at(fd, frame.name, frame.dev, frame.ino, frame.path)
            if k > start and fd is not None:
                os.close(fd)  # a stepping stone, not kept
            if opened is None:
                return None
            fd = opened
        assert fd is not None
        frames[index].fd = fd
        self.open_fds += 1
        return fd

    def _push(self, frame: _Frame) -> None:
        """Push a directory just opened, list it, and close the shallowest fds past MAX_OPEN_DIRS."""
        frames = self.frames
        frames.append(frame)
        self.open_fds += 1
        for shallow in frames[:-1]:
            if self.open_fds <= MAX_OPEN_DIRS:
                break
            self._close(shallow)
        self.lister.list(frame)

    def _close(self, frame: _Frame) -> None:
        if frame.fd >= 0:
            os.close(frame.fd)
            frame.fd = -1
            self.open_fds -= 1

    def _pop(self) -> None:
        self._close(self.frames.pop())


class _Lister:
    """Counts what one directory holds into a :class:`TreeWalk`, as ``_walker.c``'s ``list_dir`` and
    ``count_file`` do."""

    def __init__(
        self,
        result: TreeWalk,
        exclude: frozenset[str],
        cross_filesystems: bool,
        ownership: Ownership | None,
        *,
        map_extents: bool,
        map_hardlinked: bool,
    ) -> None:
        self.result = result
        self.map_extents = map_extents
        self.map_hardlinked = map_hardlinked
        self.mapped: dict[int, int] = {}  # hardlinked inode -> its shared blocks, once mapped
        self.exclude = exclude
        self.cross = cross_filesystems
        self.ownership = ownership
        self.owned = (
            {path: index for index, paths in enumerate(ownership.files) for path in paths} if ownership else None
        )
        packages = len(ownership.files) if ownership else 0
        result.package_blocks = [0] * packages
        result.cached_single_blocks = [0] * packages
        result.uncached_single_blocks = [0] * packages
        self.untracked_inodes: set[int] = set()
        self.spender: _Spender | None = None

    def list(self, frame: _Frame) -> None:
        """Count every entry of ``frame``'s directory, stat()ed from its fd, and keep its subdirectories."""
        result = self.result
        errors = result.errors
        dev = result.dev
        reldir = frame.path[len(result.path) + 1 :]
        owned = self.owned
        check_owner = owned is not None and not (reldir == METADATA_DIR or reldir.startswith(METADATA_DIR + "/"))
        relprefix = reldir + "/" if reldir else ""
        pending = frame.pending
        ino_append, nlink_append, blocks_append = result.ino.append, result.nlink.append, result.blocks.append
        dirs = files = hardlinked = apparent = private_blocks = skipped_mounts = 0
        spender = self.spender
        try:
            with os.scandir(frame.fd) as entries:
                for entry in entries:
                    if spender is not None:
                        spender.spend()
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        path = f"{frame.path}/{entry.name}"
                        errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if f"{frame.path}/{entry.name}" in self.exclude:
                            continue
                        if st.st_dev != dev and not self.cross:
                            skipped_mounts += 1
                            continue
                        dirs += 1
                        apparent += st.st_size
                        private_blocks += st.st_blocks
                        pending.append((entry.name, st.st_dev, st.st_ino))
                        continue
                    files += 1
                    apparent += st.st_size
                    blocks = self._blocks(frame.fd, entry.name, st) if self.map_extents else st.st_blocks
                    if check_owner:
                        self._own(relprefix + entry.name, st, blocks)
                    if st.st_nlink == 1:
                        private_blocks += blocks
                    else:
                        hardlinked += 1
                        ino_append(st.st_ino)
                        nlink_append(st.st_nlink)
                        blocks_append(blocks)
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), frame.path, exc.strerror or str(exc)))
        result.dirs += dirs
        result.files += files
        result.hardlinked_files += hardlinked
        result.apparent_bytes += apparent
        result.private_blocks += private_blocks
        result.skipped_mounts += skipped_mounts

    def _blocks(self, dir_fd: int, name: str, st: os.stat_result) -> int:
        """The blocks to count of the file ``name``: ``st_blocks`` less its extents flagged shared, which
        become rows (a hardlinked inode once, only with ``map_hardlinked``), as ``_walker.c``'s
        ``counted_blocks``."""
        if not stat.S_ISREG(st.st_mode) or not st.st_blocks or st.st_dev != self.result.dev:
            return st.st_blocks
        if st.st_nlink > 1 and not self.map_hardlinked:
            return st.st_blocks
        shared = self.mapped.get(st.st_ino) if st.st_nlink > 1 else None
        if shared is None:
            result = self.result
            row_ino = st.st_ino if st.st_nlink > 1 else 0
            extents = shared_extents(dir_fd, name, st)
            for start, length in extents:
                result.extent_start.append(start)
                result.extent_length.append(length)
                result.extent_ino.append(row_ino)
            shared = sum(length for _, length in extents) // BLOCK_SIZE
            if st.st_nlink > 1:
                self.mapped[st.st_ino] = shared
        return max(st.st_blocks - shared, 0)

    def _own(self, rel: str, st: os.stat_result, blocks: int) -> None:
        """Count a non-directory at ``rel`` (outside conda-meta/) as untracked or as its package's;
        ``blocks``: what it holds alone (see :meth:`_blocks`)."""
        result = self.result
        assert self.owned is not None and self.ownership is not None
        package = self.owned.get(rel)
        if package is None:
            result.untracked_files += 1
            if st.st_nlink == 1 or st.st_ino not in self.untracked_inodes:
                result.untracked_blocks += st.st_blocks
                if st.st_nlink > 1:
                    self.untracked_inodes.add(st.st_ino)
            return
        result.package_blocks[package] += st.st_blocks
        if st.st_nlink == 1 and stat.S_ISREG(st.st_mode) and rel not in self.ownership.relocated[package]:
            if self.spender is not None:  # the look-up in the cache is a request to the filesystem too
                self.spender.spend()
            if _in_cache(self.ownership.cache_entries[package], rel):
                result.cached_single_blocks[package] += blocks
            else:
                result.uncached_single_blocks[package] += blocks
