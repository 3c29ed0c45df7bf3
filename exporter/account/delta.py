"""Account stage, link deltas: re-account trees that were not walked again after links elsewhere changed.

An incremental rescan walks only the changed trees. Every other tree's shared-inode table is then
brought up to date from the change in links per inode that the rescanned trees show
(:func:`link_delta`), without touching the filesystem (:func:`apply_link_delta`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from exporter.model import BLOCK_SIZE, SharedInodes, TreeUsage, UInt

__all__ = ["LinkDelta", "apply_link_delta", "link_delta"]

@dataclass(frozen=True)
class LinkDelta:
    """Links removed per inode on one device: ``removed[i]`` links of inode ``ino[i]`` went away
    (negative: links were added). ``ino`` is sorted and unique."""

    dev: int
    ino: UInt
    removed: npt.NDArray[np.int64]


def link_delta(old: Iterable[SharedInodes], new: Iterable[SharedInodes]) -> dict[int, LinkDelta]:
    """Per device, how the links found in a set of rescanned trees changed: old ``found`` minus new
    ``found`` per inode (an inode missing from a table counts 0 there).

    Only shared inodes are in the tables. That is exact for the rows of *other* trees' tables: an inode
    shared with another tree was shared in every rescanned tree holding it, before and after, unless
    that other tree changed too (then it must be in the rescanned set, and gets no delta).
    """
    by_dev: dict[int, tuple[list[UInt], list[npt.NDArray[np.int64]]]] = {}
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
    Returns ``usage`` itself when nothing changes. Cost: O(delta * log rows) lookups and one copy of
    the ``nlink`` column per tree it changes; no filesystem access.
    """
    delta = deltas.get(usage.dev)
    table = usage.shared
    if delta is None or not len(table) or not len(delta.ino):
        return usage
    # Look the (few) delta inodes up in the (many) table rows, not the other way round.
    pos = np.searchsorted(table.ino, delta.ino)
    inside = pos < len(table)
    pos, removed = pos[inside], delta.removed[inside]
    hit = table.ino[pos] == delta.ino[inside]
    rows, removed = pos[hit], removed[hit]
    if not len(rows):
        return usage
    found, blocks, old_nlink = table.found[rows], table.blocks[rows], table.nlink[rows]
    new_nlink = np.maximum(old_nlink.astype(np.int64) - removed, 1)
    # a copy, widened when links were added past what the column's dtype holds (a narrowed column, see
    # SharedInodes): written into as it is, numpy would wrap the count round
    wide_enough = np.promote_types(table.nlink.dtype, np.min_scalar_type(int(new_nlink.max())))
    nlink = table.nlink.astype(wide_enough)
    nlink[rows] = new_nlink
    # Rows stay in the table even when all their links are inside the tree, so that a later delta
    # (links added again, or a transient count seen by a walk racing with a change) can move them back.
    was_private = found >= old_nlink
    now_private = found >= new_nlink
    gained = int(blocks[now_private & ~was_private].sum()) - int(blocks[was_private & ~now_private].sum())
    was_linked = old_nlink > 1
    now_linked = new_nlink > 1
    linked_change = int(found[now_linked & ~was_linked].sum()) - int(found[was_linked & ~now_linked].sum())
    shared = SharedInodes(dev=table.dev, ino=table.ino, nlink=nlink, found=table.found, blocks=table.blocks)
    return replace(
        usage,
        unique_bytes=usage.unique_bytes + gained * BLOCK_SIZE,
        shared_bytes=usage.shared_bytes - gained * BLOCK_SIZE,
        hardlinked_files=usage.hardlinked_files + linked_change,
        shared=shared,
    )
