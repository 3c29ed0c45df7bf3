"""Account stage, shared extents: count data that files share by reflink once, as inodes are counted once.

On a filesystem that can reflink (:mod:`exporter.scan.reflink`) two single-link files may hold the same
physical blocks: ``st_blocks`` counts them in each, and so does ``du``. The walker maps such files
(``FIEMAP``) and keeps each extent flagged *shared* as a *reference*: physical start and length in bytes,
on the tree's device. Everything here works on references, never on paths.

References are split at every boundary any of them has into *pieces* (elementary byte ranges): two
references of one btrfs extent need not start or end alike, so pieces, not whole extents, are what is
counted. A piece's *owners* are whatever holds its references (a tree, an env, a package dir); the
bytes of a set of files are then ``st_blocks`` minus their references plus the union of the pieces.

The flag says that *some* other reference exists, not where: a piece referenced once in everything
scanned is shared with something unseen (a snapshot, a file outside the roots, a hardlinked file, which
is not mapped) and is never counted as anyone's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from exporter.model import EnvUsage, PkgsChunk, TreeUsage

__all__ = [
    "FIXED", "Coverage", "ExtentGroups", "Pieces", "coverage", "extent_groups", "extent_total", "own_extents",
    "settle_trees", "stale_trees",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

FIXED = -1
"""The owner of references that nothing being considered can remove (see :func:`extent_groups`)."""

_PADDED = 4  # owners per piece grouped as table rows
_PAD = -2


@dataclass(frozen=True)
class Coverage:
    """References split into pieces: ``bounds`` (sorted, unique byte offsets; piece ``i`` is
    ``[bounds[i], bounds[i+1])``), ``refs[i]`` the references covering piece ``i`` (0 for a gap), and
    ``first``/``last``, for each reference, the index of its first piece and one past its last."""

    bounds: U64
    refs: I64
    first: I64
    last: I64

    @property
    def lengths(self) -> I64:
        lengths: I64 = np.diff(self.bounds).astype(np.int64)
        return lengths


def coverage(start: U64, length: U64) -> Coverage:
    """The pieces of references ``start[i]`` .. ``start[i] + length[i]`` (bytes)."""
    end = start + length
    bounds = np.unique(np.concatenate([start, end]))
    first = np.searchsorted(bounds, start).astype(np.int64)
    last = np.searchsorted(bounds, end).astype(np.int64)
    steps = np.zeros(len(bounds) + 1, np.int64)
    np.add.at(steps, first, 1)
    np.add.at(steps, last, -1)
    refs = np.cumsum(steps)[: max(len(bounds) - 1, 0)]
    return Coverage(bounds, refs, first, last)


@dataclass(frozen=True)
class ExtentGroups:
    """The pieces of one device's references, summed by who references them.

    ``union``: bytes of every referenced piece, once. ``groups``: for the pieces referenced at least
    twice (so the shared flag is explained by what was seen) and by no :data:`FIXED` owner, the
    sorted tuple of their distinct owners -> bytes of those pieces.
    """

    union: int
    groups: dict[tuple[int, ...], int]

    def owned_by_one(self) -> dict[int, int]:
        """Per owner, the bytes of the pieces only it references (at least twice)."""
        return {owners[0]: size for owners, size in self.groups.items() if len(owners) == 1}


def extent_groups(start: U64, length: U64, owner: I64) -> ExtentGroups:
    """Group the pieces of references (``start``, ``length`` in bytes, on one device) by their owners.

    ``owner[i]`` is a non-negative id of what holds reference ``i``, or :data:`FIXED`. Cost: one sort
    of the references, then one row per (reference, piece it covers).
    """
    if not len(start):
        return ExtentGroups(0, {})
    cover = coverage(start, length)
    lengths = cover.lengths
    union = int(lengths[cover.refs >= 1].sum())
    span = cover.last - cover.first
    rows = int(span.sum())
    # one row per (reference, piece): the piece's index, and the reference's owner
    offsets = np.repeat(np.cumsum(span) - span, span)
    piece = np.repeat(cover.first, span) + (np.arange(rows, dtype=np.int64) - offsets)
    owners = np.repeat(owner.astype(np.int64), span)
    fixed = np.zeros(len(lengths), bool)
    fixed[piece[owners < 0]] = True
    candidate = (cover.refs >= 2) & ~fixed
    keep = candidate[piece]
    piece, owners = piece[keep], owners[keep]
    if not len(piece):
        return ExtentGroups(union, {})
    order = np.lexsort((owners, piece))
    piece, owners = piece[order], owners[order]
    distinct = np.ones(len(piece), bool)
    distinct[1:] = (piece[1:] != piece[:-1]) | (owners[1:] != owners[:-1])
    piece, owners = piece[distinct], owners[distinct]
    starts = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1]])
    counts = np.diff(np.r_[starts, len(piece)])
    sizes = lengths[piece[starts]]
    groups: dict[tuple[int, ...], int] = {}
    # Pieces with few owners (nearly all: a cache file and the envs reflinking it) are grouped as
    # rows of a padded table; the rest one by one.
    few = counts <= _PADDED
    if few.any():
        table = np.full((int(few.sum()), _PADDED), _PAD, np.int64)
        row = np.repeat(np.arange(int(few.sum())), counts[few])
        column = np.arange(len(row)) - np.repeat(np.cumsum(counts[few]) - counts[few], counts[few])
        table[row, column] = owners[np.repeat(starts[few], counts[few]) + column]
        keys, inverse = np.unique(table, axis=0, return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=sizes[few], minlength=len(keys))
        for key, size in zip(keys.tolist(), summed.tolist(), strict=True):
            groups[tuple(k for k in key if k != _PAD)] = int(size)
    owner_list = owners.tolist()
    for begin, count, size in zip(starts[~few].tolist(), counts[~few].tolist(), sizes[~few].tolist(), strict=True):
        key = tuple(owner_list[begin : begin + count])
        groups[key] = groups.get(key, 0) + int(size)
    return ExtentGroups(union, groups)


def _own_owner(usage: TreeUsage, owner: int) -> I64:
    """``owner`` for each of ``usage``'s extent rows that is the tree's own, :data:`FIXED` for the rows
    of a hardlinked inode with links outside the tree (what holds them is not the tree alone)."""
    owners = np.full(len(usage.extent_start), owner, np.int64)
    linked = usage.extent_ino != 0
    if linked.any():
        table = usage.shared
        outside = table.ino[table.found < table.nlink]
        owners[linked & np.isin(usage.extent_ino, outside)] = FIXED
    return owners


def own_extents(usage: TreeUsage) -> tuple[int, int]:
    """``(union, within)`` of one tree's extent rows, in bytes: each referenced byte once, and the bytes
    only the tree's own rows reference, at least twice (its own cost, unless another tree has them)."""
    if not len(usage.extent_start):
        return 0, 0
    groups = extent_groups(usage.extent_start, usage.extent_length, _own_owner(usage, 0))
    return groups.union, groups.groups.get((0,), 0)


def settle_trees(trees: Sequence[TreeUsage]) -> list[TreeUsage]:
    """``trees`` (every tree scanned, a tree at most once) with each one's ``extent_unique_bytes`` made
    exact: bytes it references at least twice and no other tree references move from shared to unique,
    and back when another tree references them too. Trees without extent rows are returned as they are."""
    settled = list(trees)
    by_dev: dict[int, list[int]] = {}
    for index, usage in enumerate(trees):
        if len(usage.extent_start):
            by_dev.setdefault(usage.dev, []).append(index)
    for members in by_dev.values():
        if not any(trees[i].extent_within_bytes for i in members):
            continue  # (nearly always) no tree references anything twice: none has bytes of its own
        start = np.concatenate([trees[i].extent_start for i in members])
        length = np.concatenate([trees[i].extent_length for i in members])
        owner = np.concatenate([_own_owner(trees[i], i) for i in members])
        own = extent_groups(start, length, owner).owned_by_one()
        for i in members:
            usage = trees[i]
            move = own.get(i, 0) - usage.extent_unique_bytes
            if move:
                settled[i] = replace(
                    usage,
                    unique_bytes=usage.unique_bytes + move,
                    shared_bytes=usage.shared_bytes - move,
                    extent_unique_bytes=usage.extent_unique_bytes + move,
                )
    return settled


def extent_total(trees: Iterable[TreeUsage]) -> int:
    """What the trees' extent rows add to their distinct total (each inode once, each byte once) beyond
    their unique bytes and their shared inodes: per device, the union of every row, less the part of it
    each tree already counts as unique."""
    by_dev: dict[int, list[TreeUsage]] = {}
    for usage in trees:
        if len(usage.extent_start):
            by_dev.setdefault(usage.dev, []).append(usage)
    total = 0
    for members in by_dev.values():
        start = np.concatenate([t.extent_start for t in members])
        length = np.concatenate([t.extent_length for t in members])
        cover = coverage(start, length)
        total += int(cover.lengths[cover.refs >= 1].sum()) - sum(t.extent_unique_bytes for t in members)
    return total


class Pieces:
    """Pieces grouped by the envs and cleanable package dirs referencing them, for what deleting envs
    frees (:mod:`exporter.account.reclaim`); and per cache, the pieces that only package dirs clean alone
    removes reference (part of ``conda_pkgs_unreferenced_bytes``).

    ``packages`` cleanable package dirs, numbered as ``chunks`` give them (each chunk with its cache's
    path and the package id of each of its package dirs, -1: not cleanable), ``alone[id]``: clean alone
    removes it. Owner ids: package ids, then ``packages + i`` for ``envs[i]``. References of an env's
    hardlinked files (not mapped: see :func:`exporter.scan.walk.walk_tree`), of a cache's own files and of
    ``fixed`` trees are never freed. Pieces of a single env's own are in its unique bytes, and not counted
    again here.
    """

    def __init__(
        self,
        packages: int,
        alone: npt.NDArray[np.bool_],
        chunks: Iterable[tuple[str, PkgsChunk, I64]],
        envs: Sequence[EnvUsage],
        fixed: Iterable[TreeUsage],
    ) -> None:
        self.env_ids = {env.prefix: packages + i for i, env in enumerate(envs)}
        columns: dict[int, list[tuple[U64, U64, I64]]] = {}
        cache_of = np.zeros(packages, np.int64)
        cache_paths: list[str] = []
        for path, chunk, ids in chunks:
            if path not in cache_paths:
                cache_paths.append(path)
            cache_of[ids[ids >= 0]] = cache_paths.index(path)
            usage = chunk.usage
            if not len(usage.extent_start):
                continue
            where = chunk.extent_package.astype(np.int64)
            owner = np.full(len(usage.extent_start), FIXED, np.int64)
            if len(where) == len(owner):  # (else a chunk of an older state: its rows are nobody's to free)
                known = (where >= 0) & (where < len(ids))  # -1: a file of the cache dir, in no package dir
                # (ids are -1 = FIXED for dirs clean never removes). A hardlinked file's rows are its package
                # dir's too: conda cleans the dir only once no file of it has a link elsewhere, and then the
                # file goes with it.
                owner[known] = ids[where[known]]
            columns.setdefault(usage.dev, []).append((usage.extent_start, usage.extent_length, owner))
        for env in envs:
            owner = np.where(env.usage.extent_ino != 0, FIXED, self.env_ids[env.prefix]).astype(np.int64)
            columns.setdefault(env.usage.dev, []).append((env.usage.extent_start, env.usage.extent_length, owner))
        for usage in fixed:
            columns.setdefault(usage.dev, []).append(
                (usage.extent_start, usage.extent_length, np.full(len(usage.extent_start), FIXED, np.int64))
            )
        self.by_env: dict[int, list[tuple[frozenset[int], frozenset[int], int]]] = {}
        self.packages_only: list[tuple[frozenset[int], int]] = []
        self.clean_alone: dict[str, int] = {}
        for parts in columns.values():
            if not any(len(part[0]) for part in parts):
                continue
            groups = extent_groups(*(np.concatenate(column) for column in zip(*parts, strict=True)))
            for owners, size in groups.groups.items():
                env_set = frozenset(o for o in owners if o >= packages)
                package_set = frozenset(o for o in owners if o < packages)
                if not env_set:
                    if all(alone[p] for p in package_set):
                        homes = {int(cache_of[p]) for p in package_set}
                        if len(homes) == 1:
                            home = cache_paths[homes.pop()]
                            self.clean_alone[home] = self.clean_alone.get(home, 0) + size
                    else:
                        self.packages_only.append((package_set, size))
                elif package_set or len(env_set) > 1:  # one env's own pieces are in its unique bytes
                    for env_id in env_set:
                        self.by_env.setdefault(env_id, []).append((env_set, package_set, size))

    def freed(self, env_ids: set[int], removed: npt.NDArray[np.bool_]) -> int:
        """Bytes of the pieces freed once the envs ``env_ids`` are deleted and the package dirs ``removed``
        (per package id) are cleaned, beyond what clean alone frees."""
        total = sum(size for packages, size in self.packages_only if all(removed[p] for p in packages))
        for env_id in env_ids:
            for envs, packages, size in self.by_env.get(env_id, ()):
                # a group is listed under each of its envs: counted under the first
                if env_id == min(envs) and envs <= env_ids and all(removed[p] for p in packages):
                    total += size
        return total


def stale_trees(before: Iterable[TreeUsage], after: Iterable[TreeUsage], others: Sequence[TreeUsage]) -> list[int]:
    """Which of ``others`` (trees not walked again) to walk again after the trees walked again went from
    ``before`` to ``after``: those holding an extent row over a byte the walked trees referenced before
    and no longer do (its flag may have cleared: a cache dir cleaned, the env that shared it deleted).
    Indexes into ``others``, ascending."""
    lost_by_dev: dict[int, tuple[U64, U64]] = {}
    old = _rows_by_dev(before)
    new = _rows_by_dev(after)
    for dev, (start, length) in old.items():
        now_start, now_length = new.get(dev, (np.zeros(0, np.uint64), np.zeros(0, np.uint64)))
        cover = coverage(np.concatenate([start, now_start]), np.concatenate([length, now_length]))
        now = coverage(now_start, now_length) if len(now_start) else None
        pieces = np.flatnonzero(cover.refs >= 1)
        lo, hi = cover.bounds[pieces], cover.bounds[pieces + 1]
        if now is not None and len(now.bounds):
            # a piece is still referenced when the walked trees' new rows cover it
            at = np.searchsorted(now.bounds, lo, side="right") - 1
            inside = (at >= 0) & (at < len(now.refs))
            still = np.zeros(len(lo), bool)
            still[inside] = now.refs[at[inside]] >= 1
            lo, hi = lo[~still], hi[~still]
        if len(lo):
            lost_by_dev[dev] = (lo, hi)
    stale = []
    for index, usage in enumerate(others):
        lost = lost_by_dev.get(usage.dev)
        if lost is None or not len(usage.extent_start):
            continue
        lo, hi = lost  # sorted, disjoint
        ends = usage.extent_start + usage.extent_length
        first = np.searchsorted(hi, usage.extent_start, side="right")  # the first lost piece ending after a row starts
        hit = (first < len(lo)) & (lo[np.minimum(first, len(lo) - 1)] < ends)
        if hit.any():
            stale.append(index)
    return stale


def _rows_by_dev(trees: Iterable[TreeUsage]) -> dict[int, tuple[U64, U64]]:
    by_dev: dict[int, tuple[list[U64], list[U64]]] = {}
    for usage in trees:
        if len(usage.extent_start):
            starts, lengths = by_dev.setdefault(usage.dev, ([], []))
            starts.append(usage.extent_start)
            lengths.append(usage.extent_length)
    return {dev: (np.concatenate(s), np.concatenate(n)) for dev, (s, n) in by_dev.items()}
