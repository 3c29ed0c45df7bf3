"""Scan stage, reflinks: does a filesystem let files share data extents (``cp --reflink``, pixi, uv)?

Only then are a file's extents worth mapping (``FIEMAP``, done by the walker): elsewhere no extent can
be shared, and the walk must cost what it always did. A filesystem can reflink when

* its ``statfs`` type is btrfs (``0x9123683E``): every btrfs can, or
* its type is XFS (``0x58465342``) and its geometry (the ``XFS_IOC_FSGEOMETRY_V1`` ioctl on any
  directory of it) has the ``XFS_FSOP_GEOM_FLAGS_REFLINK`` flag: an XFS made with ``-m reflink=0``
  (or before reflinks existed) shares nothing.

Nothing is written to find out (the exporter may run on a read-only mount). The answer is kept per
``st_dev`` for the life of the process: a device's filesystem does not change while it is mounted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import struct
import threading

__all__ = ["BTRFS_MAGIC", "XFS_MAGIC", "can_reflink", "filesystem_type", "shared_extents"]

XFS_MAGIC = 0x58465342
BTRFS_MAGIC = 0x9123683E

# _IOR('X', 100, struct xfs_fsop_geom_v1): the oldest geometry ioctl, which every kernel answers; its
# 112-byte struct has the feature flags (a __u32) at offset 92.
_XFS_GEOM_V1_SIZE = 112
_XFS_IOC_FSGEOMETRY_V1 = (2 << 30) | (_XFS_GEOM_V1_SIZE << 16) | (ord("X") << 8) | 100
_XFS_GEOM_FLAGS_OFFSET = 92
XFS_FSOP_GEOM_FLAGS_REFLINK = 1 << 20

# FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap): a 32-byte header (fm_start, fm_length, fm_flags,
# fm_mapped_extents, fm_extent_count, fm_reserved) then 56-byte extents (fe_logical, fe_physical,
# fe_length, 2 reserved u64, fe_flags, 3 reserved u32).
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HEADER = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")
_FIEMAP_EXTENTS = 64
_FIEMAP_MAX_OFFSET = 0xFFFFFFFFFFFFFFFF
_EXTENT_LAST = 0x1
_EXTENT_SHARED = 0x2000
# unknown place, delayed allocation, encoded (compressed), inline, tail, not aligned: left in the blocks
_EXTENT_UNCOUNTED = 0x2 | 0x4 | 0x8 | 0x200 | 0x400 | 0x100
_OPEN_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC

_known: dict[int, bool] = {}
_lock = threading.Lock()


class _StatFs(ctypes.Structure):
    # glibc's struct statfs starts with f_type (__fsword_t, a C long); the rest is not read, but the
    # buffer must be as big as the kernel's struct (120 bytes on 64-bit): 256 is enough everywhere.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
_libc.statfs.restype = ctypes.c_int


def filesystem_type(path: str) -> int:
    """The ``statfs`` magic number (``f_type``) of the filesystem holding ``path``; OSError if none."""
    buf = _StatFs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(buf.f_type) & 0xFFFFFFFF


def _xfs_reflink(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        geometry = bytearray(_XFS_GEOM_V1_SIZE)
        fcntl.ioctl(fd, _XFS_IOC_FSGEOMETRY_V1, geometry)
    finally:
        os.close(fd)
    (flags,) = struct.unpack_from("=I", geometry, _XFS_GEOM_FLAGS_OFFSET)
    return bool(flags & XFS_FSOP_GEOM_FLAGS_REFLINK)


def _probe(path: str) -> bool:
    kind = filesystem_type(path)
    if kind == BTRFS_MAGIC:
        return True
    if kind == XFS_MAGIC:
        return _xfs_reflink(path)
    return False


def can_reflink(path: str, dev: int) -> bool:
    """Whether files on device ``dev``, which holds the directory ``path``, can share extents.

    Asked once per device per process. A device whose answer cannot be read (the path vanished, the
    ioctl refused) counts as one that cannot reflink, and is asked again next time.
    """
    known = _known.get(dev)
    if known is not None:
        return known
    try:
        answer = _probe(path)
    except OSError:
        return False
    with _lock:
        _known[dev] = answer
    return answer


def shared_extents(dir_fd: int, name: str, st: os.stat_result) -> list[tuple[int, int]]:
    """The extents flagged shared of the regular file ``name`` in the directory ``dir_fd``, as (physical
    start, length) in bytes, by ``FS_IOC_FIEMAP`` (what ``exporter/scan/_walker.c``'s ``map_file`` does).
    Empty when it cannot be opened or mapped, or is no longer the inode ``st`` describes."""
    try:
        fd = os.open(name, _OPEN_FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return []
    found: list[tuple[int, int]] = []
    try:
        opened = os.fstat(fd)
        if opened.st_ino != st.st_ino or opened.st_dev != st.st_dev:
            return []
        start = 0
        buffer = bytearray(_FIEMAP_HEADER.size + _FIEMAP_EXTENTS * _FIEMAP_EXTENT.size)
        while True:
            _FIEMAP_HEADER.pack_into(buffer, 0, start, _FIEMAP_MAX_OFFSET - start, 0, 0, _FIEMAP_EXTENTS, 0)
            try:
                fcntl.ioctl(fd, _FS_IOC_FIEMAP, buffer)
            except OSError:
                return found
            mapped = _FIEMAP_HEADER.unpack_from(buffer, 0)[3]
            if not mapped:
                return found
            flags = 0
            after = start
            for i in range(mapped):
                logical, physical, length, flags = _FIEMAP_EXTENT.unpack_from(
                    buffer, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size
                )
                if flags & _EXTENT_SHARED and not flags & _EXTENT_UNCOUNTED and length:
                    found.append((physical, length))
                after = logical + length
            if flags & _EXTENT_LAST or mapped < _FIEMAP_EXTENTS or after <= start:  # (no progress: stop)
                return found
            start = after
    finally:
        os.close(fd)
