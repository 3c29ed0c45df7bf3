"""Real reflink filesystems for the tests and the benchmark: XFS (``mkfs.xfs -m reflink=1``) and btrfs,
each made on a sparse loop file and mounted with ``mount -o loop`` (root only).

:func:`loop_filesystem` says why it cannot (not root, no ``mkfs.*``, no loop device) instead of failing,
so that a test can skip with that reason; unmounting and detaching happen however the body ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "xfs-noreflink": ["mkfs.xfs", "-q", "-f", "-m", "reflink=0"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}


class UnavailableError(Exception):
    """The filesystem cannot be made or mounted here; the message says why."""


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def _detach(image: Path) -> None:
    """Detach every loop device still backed by ``image`` (mount's autoclear normally has)."""
    listed = _run(["losetup", "-j", str(image)])
    for line in listed.stdout.splitlines():
        _run(["losetup", "-d", line.split(":", 1)[0]])


def _unmount(mountpoint: Path) -> None:
    """Unmount ``mountpoint`` and every mount below it, deepest first (a test may mount a tmpfs inside)."""
    below = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
             if line.split()[1] == str(mountpoint) or line.split()[1].startswith(f"{mountpoint}/")]
    for path in sorted(below, key=len, reverse=True):
        if _run(["umount", path]).returncode != 0:
            _run(["umount", "-l", path])


@contextlib.contextmanager
def loop_filesystem(kind: str, workdir: Path, size_mib: int = 400) -> Iterator[Path]:
    """A fresh ``kind`` filesystem (a key of :data:`MKFS`) mounted at ``workdir/mnt``; raises
    :class:`UnavailableError` (before anything is mounted) when it cannot be made here."""
    if os.geteuid() != 0:
        raise UnavailableError("loop mounts need root")
    if shutil.which(MKFS[kind][0]) is None:
        raise UnavailableError(f"{MKFS[kind][0]} is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    image = workdir / f"{kind}.img"
    mountpoint = workdir / "mnt"
    mountpoint.mkdir(exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(size_mib << 20)
    made = _run([*MKFS[kind], str(image)])
    if made.returncode != 0:
        image.unlink()
        raise UnavailableError(f"{' '.join(MKFS[kind])} failed: {made.stderr.strip()}")
    mounted = _run(["mount", "-o", "loop", str(image), str(mountpoint)])
    if mounted.returncode != 0:
        _detach(image)
        image.unlink()
        raise UnavailableError(f"mount -o loop failed: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        _unmount(mountpoint)
        _detach(image)
        image.unlink(missing_ok=True)


def free_bytes(path: Path) -> int:
    """Free bytes of the filesystem holding ``path`` (``statfs`` ``f_bfree * f_frsize``)."""
    vfs = os.statvfs(path)
    return vfs.f_bfree * vfs.f_frsize


def settled_free_bytes(path: Path, deadline_seconds: float = 30.0) -> int:
    """Free bytes once the filesystem has finished freeing: ``sync``, then the same figure twice in a
    row 0.2 s apart (XFS frees unlinked inodes' blocks in the background), within a deadline."""
    subprocess.run(["sync", "-f", str(path)], check=True)
    deadline = time.monotonic() + deadline_seconds
    last = free_bytes(path)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        subprocess.run(["sync", "-f", str(path)], check=True)
        now = free_bytes(path)
        if now == last:
            return now
        last = now
    raise AssertionError(f"free space of {path} still changing after {deadline_seconds} s")
