"""Hardlink accounting: turn walks into unique/shared byte counts.

The rule (checked against ``du`` in the tests): an inode met while walking a tree is private to that
tree exactly when the number of its links found in the tree equals its ``st_nlink``. Directories
cannot be hardlinked, so they and ``nlink == 1`` files are private without counting. Everything else
is *shared*: it has at least one link outside the tree (package cache, another env, anywhere).

Shared inodes are kept as a :class:`SharedInodes` table so that totals over several trees (a whole
root) can count each inode once, and so that later changes elsewhere can be re-accounted without
walking this tree again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from exporter.walk import TreeWalk, WalkError

__all__ = ["BLOCK_SIZE", "SharedInodes", "TreeUsage", "account_tree", "distinct_bytes"]

BLOCK_SIZE = 512
"""Unit of ``st_blocks`` on Linux, whatever the filesystem's block size."""

U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class SharedInodes:
    """Inodes of one tree that have links outside it, one row per inode, sorted by ``ino``.

    ``found`` is the number of the inode's links inside the tree, ``nlink`` its ``st_nlink`` when
    walked, ``blocks`` its ``st_blocks`` (512-byte units).
    """

    dev: int
    ino: U64
    nlink: U64
    found: U64
    blocks: U64

    @classmethod
    def empty(cls, dev: int = 0) -> SharedInodes:
        none = np.zeros(0, dtype=np.uint64)
        return cls(dev, none, none, none, none)

    def __len__(self) -> int:
        return int(self.ino.shape[0])


@dataclass(frozen=True)
class TreeUsage:
    """Accounted usage of one tree (an env prefix or a package cache). Bytes are bytes.

    ``unique_bytes`` + ``shared_bytes`` equals ``du -s -B1`` of the tree; ``apparent_bytes`` equals
    ``du -s -b -l``; ``files`` counts non-directories (symlinks included), ``hardlinked_files`` those
    whose inode has ``st_nlink > 1``.
    """

    path: str
    dev: int
    unique_bytes: int
    shared_bytes: int
    apparent_bytes: int
    dirs: int
    files: int
    hardlinked_files: int
    skipped_mounts: int
    errors: tuple[WalkError, ...]
    shared: SharedInodes


def account_tree(walk: TreeWalk) -> TreeUsage:
    """Count each inode of ``walk`` once and split its bytes into unique and shared."""
    ino = np.frombuffer(walk.ino, dtype=np.uint64) if len(walk.ino) else np.zeros(0, np.uint64)
    nlink = np.frombuffer(walk.nlink, dtype=np.uint64) if len(walk.nlink) else np.zeros(0, np.uint64)
    blocks = np.frombuffer(walk.blocks, dtype=np.uint64) if len(walk.blocks) else np.zeros(0, np.uint64)
    distinct, first, found = np.unique(ino, return_index=True, return_counts=True)
    nlink_d = nlink[first]
    blocks_d = blocks[first]
    # found > nlink only if links were added while walking: all links are still inside, so private.
    private = found.astype(np.uint64) >= nlink_d
    outside = ~private
    unique_blocks = walk.private_blocks + int(blocks_d[private].sum())
    shared_blocks = int(blocks_d[outside].sum())
    shared = SharedInodes(
        dev=walk.dev,
        ino=distinct[outside],
        nlink=nlink_d[outside],
        found=found[outside].astype(np.uint64),
        blocks=blocks_d[outside],
    )
    return TreeUsage(
        path=walk.path,
        dev=walk.dev,
        unique_bytes=unique_blocks * BLOCK_SIZE,
        shared_bytes=shared_blocks * BLOCK_SIZE,
        apparent_bytes=walk.apparent_bytes,
        dirs=walk.dirs,
        files=walk.files,
        hardlinked_files=walk.hardlinked_files,
        skipped_mounts=walk.skipped_mounts,
        errors=tuple(walk.errors),
        shared=shared,
    )


def distinct_bytes(usages: Iterable[TreeUsage]) -> int:
    """Allocated bytes of the union of disjoint trees, each inode counted once (``du -s`` of them all).

    Private inodes of different trees are distinct by definition; shared ones may be met in several
    trees and are de-duplicated by ``(dev, ino)``.
    """
    total = 0
    by_dev: dict[int, list[SharedInodes]] = {}
    for usage in usages:
        total += usage.unique_bytes
        if len(usage.shared):
            by_dev.setdefault(usage.dev, []).append(usage.shared)
    for tables in by_dev.values():
        ino = np.concatenate([t.ino for t in tables])
        blocks = np.concatenate([t.blocks for t in tables])
        _, first = np.unique(ino, return_index=True)
        total += int(blocks[first].sum()) * BLOCK_SIZE
    return total
