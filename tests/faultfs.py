"""A read-only FUSE passthrough of a directory that fails chosen paths with a chosen errno, for real.

``python -m tests.faultfs SOURCE MOUNTPOINT CONTROL`` serves SOURCE at MOUNTPOINT (fusepy over Debian's
libfuse2, in the foreground) with the inode numbers, link counts and blocks of SOURCE (``use_ino``), and no
kernel caching of entries or attributes, so a change of CONTROL shows at once. CONTROL holds lines
``ERRNO-NAME RELATIVE-PATH`` (``ESTALE envs/web/share``): a lookup or listing of that path, or of anything
below it, answers that errno, which the kernel hands to the walker as an NFS server's error would be.

:func:`mounted` runs it for a test and unmounts it afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STAT_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_atime", "st_mtime",
               "st_ctime")


def faults(control: str) -> list[tuple[int, str]]:
    """(errno, relative path) of each line of the control file (none when it is missing)."""
    try:
        with open(control, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        name, _, rel = line.strip().partition(" ")
        if name:
            found.append((getattr(errno, name), rel.strip("/")))
    return found


def serve(source: str, mountpoint: str, control: str, subtype: str = "") -> None:
    from fuse import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]  # fusepy: where a test mounts one

    class FaultFS(Operations):  # type: ignore[misc]  # (fusepy is untyped)
        def _real(self, path: str) -> str:
            rel = path.strip("/")
            for code, failing in faults(control):
                if rel == failing or rel.startswith(failing + "/"):
                    raise FuseOSError(code)
            return os.path.join(source, rel)

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            st = os.lstat(self._real(path))
            return {name: getattr(st, name) for name in STAT_FIELDS}

        def readdir(self, path: str, fh: Any) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._real(path))

        def open(self, path: str, flags: int) -> int:
            return os.open(self._real(path), flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                       "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    options = {"subtype": subtype} if subtype else {}
    FUSE(FaultFS(), mountpoint, foreground=True, ro=True, use_ino=True, entry_timeout=0, attr_timeout=0,
         negative_timeout=0, fsname="faultfs", **options)


@contextlib.contextmanager
def mounted(source: Path, mountpoint: Path, control: Path, deadline: float = 20.0, subtype: str = "") -> Iterator[Path]:
    """SOURCE served at MOUNTPOINT until the block ends; with ``subtype``, its type in mountinfo is
    ``fuse.SUBTYPE`` (``sshfs``: what the exporter takes for a network filesystem, as a real sshfs mount)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.faultfs", str(source), str(mountpoint), str(control), subtype]
    proc = subprocess.Popen(command,
                            cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + deadline
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                why = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"faultfs exited with {proc.returncode}: {why}")
            if time.monotonic() > end:
                raise RuntimeError("faultfs did not mount in time")
            time.sleep(0.05)
        yield mountpoint
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], check=False, capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    serve(*sys.argv[1:5])
