"""Read a file that someone else may control, without being steered by it: the one bounded reader.

The exporter reads files others write: ``~/.conda/environments.txt`` of every user and a root's ``.condarc``
(discovery), an env's ``conda-meta/*.json`` records (scan), the state file (daemon). A root-run exporter must
not hang on a FIFO put in their place, read ``/dev/zero`` for ever, load a file of gigabytes, or (for a file
an env owner or another user controls) follow a symlink or hardlink to a file they cannot read.
:func:`read_small_file` opens without blocking, checks that what it opened is a regular file of at most
``max_bytes`` (and, when asked, owned by a given user and not a symlink), and reads at most that many bytes.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["FileTooLargeError", "NotRegularFileError", "UnsafeFileError", "read_small_file"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """The file exists but is refused: a symlink, or owned by someone else (or one of the subclasses)."""


class NotRegularFileError(UnsafeFileError):
    """A FIFO, device, socket or directory where a regular file was expected."""


class FileTooLargeError(UnsafeFileError):
    """Over the byte limit, by its size or by growing while read."""


def read_small_file(path: str, max_bytes: int, *, owner: int | None = None, follow_symlinks: bool = True,
                    dir_fd: int | None = None) -> bytes:
    """The bytes of ``path`` (relative to ``dir_fd`` if given), at most ``max_bytes`` of them.

    With ``owner``, the file must belong to that uid; without ``follow_symlinks``, ``path`` itself must not be
    a symlink. Raises an :class:`UnsafeFileError` saying why a file is refused, and ``OSError`` when it cannot
    be opened or read.
    """
    try:
        fd = os.open(path, _FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW), dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafeFileError(f"{path!r} is a symlink (not followed)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{path!r} is not a regular file")
        if owner is not None and st.st_uid != owner:
            raise UnsafeFileError(f"{path!r} belongs to uid {st.st_uid}, not to its user ({owner})")
        if st.st_size > max_bytes:
            raise FileTooLargeError(f"{path!r} has {st.st_size} bytes, over the {max_bytes}-byte limit")
        chunks: list[bytes] = []
        left = max_bytes + 1  # one more than allowed: a file that grew since fstat is refused, not cut
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise FileTooLargeError(f"{path!r} grew past the {max_bytes}-byte limit while read")
        return b"".join(chunks)
    finally:
        os.close(fd)
