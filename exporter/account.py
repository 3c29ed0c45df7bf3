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
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from exporter.walk import TreeWalk, WalkError

__all__ = [
    "BLOCK_SIZE",
    "LinkDelta",
    "SharedInodes",
    "TreeUsage",
    "account_tree",
    "apply_link_delta",
    "distinct_bytes",
    "link_delta",
]

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
        # rows re-accounted as private (found >= nlink) are already in their tree's unique bytes
        outside = [t.found < t.nlink for t in tables]
        ino = np.concatenate([t.ino[o] for t, o in zip(tables, outside, strict=True)])
        blocks = np.concatenate([t.blocks[o] for t, o in zip(tables, outside, strict=True)])
        _, first = np.unique(ino, return_index=True)
        total += int(blocks[first].sum()) * BLOCK_SIZE
    return total


@dataclass(frozen=True)
class LinkDelta:
    """Links removed per inode on one device: ``removed[i]`` links of inode ``ino[i]`` went away
    (negative: links were added). ``ino`` is sorted and unique."""

    dev: int
    ino: U64
    removed: npt.NDArray[np.int64]


def link_delta(old: Iterable[SharedInodes], new: Iterable[SharedInodes]) -> dict[int, LinkDelta]:
    """Per device, how the links found in a set of rescanned trees changed: old ``found`` minus new
    ``found`` per inode (an inode missing from a table counts 0 there).

    Only shared inodes are in the tables. That is exact for the rows of *other* trees' tables: an inode
    shared with another tree was shared in every rescanned tree holding it, before and after, unless
    that other tree changed too (then it must be in the rescanned set, and gets no delta).
    """
    by_dev: dict[int, tuple[list[U64], list[npt.NDArray[np.int64]]]] = {}
    for tables, sign in ((old, 1), (new, -1)):
        for table in tables:
            if not len(table):
                continue
            inos, counts = by_dev.setdefault(table.dev, ([], []))
            inos.append(table.ino)
            counts.append(table.found.astype(np.int64) * sign)
    deltas: dict[int, LinkDelta] = {}
    for dev, (inos, counts) in by_dev.items():
        ino = np.concatenate(inos)
        count = np.concatenate(counts)
        distinct, inverse = np.unique(ino, return_inverse=True)
        removed = np.zeros(distinct.shape[0], dtype=np.int64)
        np.add.at(removed, inverse, count)
        keep = removed != 0
        deltas[dev] = LinkDelta(dev, distinct[keep], removed[keep])
    return deltas


def apply_link_delta(usage: TreeUsage, deltas: dict[int, LinkDelta]) -> TreeUsage:
    """Re-account ``usage`` (a tree that was not rescanned) after links elsewhere changed.

    Each row of its shared table whose inode is in the delta gets ``nlink -= removed``; a row whose
    ``found >= nlink`` then has all its links in this tree and moves from shared to unique bytes (and
    its paths stop counting as hardlinked when ``nlink`` falls to 1); the reverse move happens too.
    Returns ``usage`` itself when nothing changes. Cost: O(rows + delta) per tree, no filesystem access.
    """
    delta = deltas.get(usage.dev)
    table = usage.shared
    if delta is None or not len(table) or not len(delta.ino):
        return usage
    pos = np.searchsorted(delta.ino, table.ino)
    pos_clipped = np.minimum(pos, len(delta.ino) - 1)
    hit = delta.ino[pos_clipped] == table.ino
    if not hit.any():
        return usage
    change = np.where(hit, delta.removed[pos_clipped], 0)
    nlink = np.maximum(table.nlink.astype(np.int64) - change, 1).astype(np.uint64)
    # Rows stay in the table even when all their links are inside the tree, so that a later delta
    # (links added again, or a transient count seen by a walk racing with a change) can move them back.
    was_private = table.found >= table.nlink
    now_private = table.found >= nlink
    gained = int(table.blocks[now_private & ~was_private].sum()) - int(table.blocks[was_private & ~now_private].sum())
    was_linked = table.nlink > 1
    now_linked = nlink > 1
    linked_change = int(table.found[now_linked & ~was_linked].sum()) - int(table.found[was_linked & ~now_linked].sum())
    shared = SharedInodes(dev=table.dev, ino=table.ino, nlink=nlink, found=table.found, blocks=table.blocks)
    return replace(
        usage,
        unique_bytes=usage.unique_bytes + gained * BLOCK_SIZE,
        shared_bytes=usage.shared_bytes - gained * BLOCK_SIZE,
        hardlinked_files=usage.hardlinked_files + linked_change,
        shared=shared,
    )
