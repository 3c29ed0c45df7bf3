"""Read a small configuration file that someone else may control, without being steered by it.

Discovery reads files that users write: ``~/.conda/environments.txt`` of every user, a root's
``.condarc``. A root-run exporter must not hang on a FIFO put in their place, read ``/dev/zero`` for ever,
load a file of gigabytes, or (for a file in another user's home) follow a symlink or hardlink to a file that
user cannot read and then repeat its lines in a log. :func:`read_small_file` opens without blocking, checks
that what it opened is a regular file of at most ``max_bytes`` (and, when asked, owned by a given user
and not a symlink), and reads at most that many bytes.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["UnsafeFileError", "read_small_file"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """The file exists but is refused: not a regular file, too big, a symlink, or owned by someone else."""


def read_small_file(path: str, max_bytes: int, *, owner: int | None = None, follow_symlinks: bool = True) -> bytes:
    """The bytes of ``path``, at most ``max_bytes`` of them.

    With ``owner``, the file must belong to that uid; without ``follow_symlinks``, ``path`` itself
    must not be a symlink. Raises :class:`UnsafeFileError` saying why a file is refused, and ``OSError``
    when it cannot be opened or read.
    """
    try:
        fd = os.open(path, _FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW))
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafeFileError(f"{path!r} is a symlink (not followed)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path!r} is not a regular file")
        if owner is not None and st.st_uid != owner:
            raise UnsafeFileError(f"{path!r} belongs to uid {st.st_uid}, not to its user ({owner})")
        if st.st_size > max_bytes:
            raise UnsafeFileError(f"{path!r} has {st.st_size} bytes, over the {max_bytes} read at most")
        chunks: list[bytes] = []
        left = max_bytes + 1  # one more than allowed: a file that grew since fstat is refused, not cut
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise UnsafeFileError(f"{path!r} grew past the {max_bytes} bytes read at most")
        return b"".join(chunks)
    finally:
        os.close(fd)
