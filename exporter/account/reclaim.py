"""Account stage, what can be freed: the bytes deleting a set of envs and then running ``conda clean
--packages`` would free, beyond what that clean alone frees.

conda's clean rule (``conda/cli/main_clean.py``): an extracted package dir of a cache is removed when
none of its files has ``st_nlink > 1``. So after deleting the envs of a set S, a package dir is
removed exactly when each of its hardlinked inodes loses every link but its own one, and an inode
disappears when every link it has lies in S or in such a package dir. From the tables the walks
already keep (per tree: each shared inode's links found there and its ``st_nlink``) that is exact:

    reclaimable(S) = unique bytes of each env of S
                   + inodes whose links all lie in S's envs (counted once)
                   + every package dir S's deletion makes cleanable: its dirs, single-link files
                     and hardlinked inodes.

A package dir holding an inode with two links in the cache (a hardlink inside itself, or to another
package dir) keeps ``st_nlink > 1`` whatever is deleted: conda never cleans it, and neither does this.
Packages already unreferenced are what clean alone frees (``conda_pkgs_unreferenced_bytes``) and are
not counted. Inodes are per device: envs on another filesystem than a cache share nothing with it.

On a filesystem that can reflink, blocks shared by reflink are counted by piece
(:mod:`exporter.account.extents`): a piece is freed when every reference to it lies in the deleted envs
or in package dirs clean then removes (by conda's rule, which looks at hardlinks only; a hardlinked file
of such a dir goes with it), and at least two were seen (one alone says something unseen holds it: a
snapshot, a file outside the roots). A reference held anywhere else (``ROOT/envs`` itself, a cache's own
files) is never freed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from exporter.account.extents import Pieces
from exporter.model import (
    BLOCK_SIZE,
    I32,
    EnvUsage,
    OwnerReclaim,
    PkgsChunk,
    PkgsUsage,
    Reclaim,
    SharedInodes,
    StaleReclaim,
    TreeUsage,
    UInt,
)
from exporter.scan.cache import NO_PACKAGE

__all__ = ["CacheIndex", "Freed", "package_rows", "reclaim_figures", "reclaimable"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def package_rows(
    path_ino: U64, path_package: npt.NDArray[np.uint32], may_clean: Sequence[bool], table: SharedInodes
) -> tuple[I32, tuple[bool, ...]]:
    """For one walked cache chunk: the package dir (index in its package_dirs, or -1) of each row of its
    shared table, and which of its dirs conda clean may remove. ``path_ino``/``path_package``: inode and
    package dir of each hardlinked path walked; ``may_clean``: per dir, a package read fully."""
    cleanable = np.array(may_clean, dtype=bool)
    if not len(path_ino) or not len(cleanable):
        return np.full(len(table), -1, np.int32), tuple(bool(c) for c in cleanable)
    distinct, first, inverse, counts = np.unique(path_ino, return_index=True, return_inverse=True, return_counts=True)
    twice = counts[inverse] >= 2  # an inode with two links in this chunk pins every dir holding one
    pinned = path_package[twice]
    cleanable[pinned[pinned != NO_PACKAGE].astype(np.int64)] = False
    package = path_package[first].astype(np.int64)
    package[package == NO_PACKAGE] = -1
    package[counts >= 2] = -1
    known = package >= 0
    package[known & ~cleanable[np.where(known, package, 0)]] = -1
    rows = np.searchsorted(distinct, table.ino) if len(table) else np.zeros(0, np.int64)
    return package[rows].astype(np.int32), tuple(bool(c) for c in cleanable)


@dataclass(frozen=True)
class _DeviceRows:
    ino: UInt  # sorted, unique: hardlinked inodes of cleanable package dirs
    need: I64  # links each must lose for its dir to be cleanable (st_nlink - 1)
    package: I64  # global package id


_Links = tuple[UInt, I64, UInt, UInt]  # inode (sorted, unique), links held, st_nlink, blocks


@dataclass(frozen=True)
class _EnvRows:
    """One env's shared rows, split by :meth:`CacheIndex.split`: ``pos``/``found`` for the rows a
    cleanable package dir also holds, ``other`` for the rest."""

    dev: int
    pos: I64
    found: I64
    other: _Links


@dataclass(frozen=True)
class Freed:
    """What deleting a set of envs and cleaning frees beyond clean alone: ``bytes`` in all, and the
    package dirs clean would then remove, as (path, allocated bytes)."""

    bytes: int
    packages: tuple[tuple[str, int], ...]


class CacheIndex:
    """Every cleanable package dir of some caches and its hardlinked inodes, looked up by (dev, ino).

    Built once per snapshot from the caches' chunk tables; a cache listed by two roots counts once.
    With ``envs`` (every env scanned) and ``fixed`` (every other tree that is neither env nor cache),
    what the envs' reflinked pieces free is counted too (:class:`Pieces`).
    """

    def __init__(
        self, caches: Iterable[PkgsUsage], envs: Sequence[EnvUsage] = (), fixed: Iterable[TreeUsage] = ()
    ) -> None:
        caches = list(caches)
        paths: list[str] = []
        freed_bytes: list[int] = []
        by_dev: dict[int, tuple[list[UInt], list[I64], list[I64], list[UInt]]] = {}
        seen: set[str] = set()
        for cache in caches:
            if cache.path in seen:
                continue
            seen.add(cache.path)
            for chunk in cache.chunks:
                base = len(paths)
                ids = np.full(len(chunk.cleanable), -1, np.int64)
                for index, (path, cleanable) in enumerate(zip(chunk.package_dirs, chunk.cleanable, strict=False)):
                    if cleanable:
                        ids[index] = len(paths)
                        paths.append(path)
                        freed_bytes.append(chunk.dir_private_bytes[index])
                table = chunk.usage.shared
                if not len(table) or not len(chunk.row_package) or len(paths) == base:
                    continue
                row_package = chunk.row_package.astype(np.int64)
                keep = row_package >= 0
                inos, needs, packages, blocks = by_dev.setdefault(table.dev, ([], [], [], []))
                inos.append(table.ino[keep])
                needs.append(table.nlink[keep].astype(np.int64) - 1)
                packages.append(ids[row_package[keep]])
                blocks.append(table.blocks[keep])
        self.paths = tuple(paths)
        package_bytes = np.array(freed_bytes, dtype=np.int64)
        rows = np.zeros(len(paths), np.int64)
        settled = np.zeros(len(paths), np.int64)  # rows that need to lose no link (st_nlink fell to 1)
        never = np.zeros(len(paths), bool)
        self._devices: dict[int, _DeviceRows] = {}
        while by_dev:  # popped, so each device's pieces are freed once joined
            dev, (inos, needs, packages, blocks) = by_dev.popitem()
            ino, need = np.concatenate(inos), np.concatenate(needs)
            package, block = np.concatenate(packages), np.concatenate(blocks)
            del inos, needs, packages, blocks
            distinct, first, counts = np.unique(ino, return_index=True, return_counts=True)
            # An inode in two caches' package dirs keeps a second link whatever is deleted: neither dir
            # is ever cleaned.
            twice = np.isin(ino, distinct[counts >= 2])
            never[package[twice]] = True
            np.add.at(package_bytes, package[~twice], block[~twice].astype(np.int64) * BLOCK_SIZE)  # (narrow blocks)
            np.add.at(rows, package[~twice], 1)
            np.add.at(settled, package[~twice & (need <= 0)], 1)
            once = counts == 1
            self._devices[dev] = _DeviceRows(distinct[once], need[first[once]], package[first[once]])
        self._bytes = package_bytes
        # Rows that must lose links for their package dir to be cleaned; 0 for packages that clean
        # alone removes (never part of what is freed) and for those that can never be cleaned.
        self._open = np.where(never, 0, rows - settled)
        self.alone = ~never & (rows == settled)  # per package id: conda clean alone removes it
        fixed = list(fixed)
        reflinked = [t for t in (*(e.usage for e in envs), *fixed) if len(t.extent_start)]
        reflinked += [c.usage for cache in caches for c in cache.chunks if len(c.usage.extent_start)]
        # (where nothing is reflinked, as on ext4, there are no pieces to count; without the envs, their
        # references are unknown: none is counted as freed)
        self.pieces = (
            Pieces(len(paths), self.alone, self.chunk_ids(caches), envs, fixed) if reflinked and envs else None
        )

    def _cleaned(self, hits: Iterable[tuple[I64, I64]]) -> I64:
        """Package ids cleaned once the given links go: ``hits`` pairs package ids of rows with
        whether (1/0) each row then has no link left but its own."""
        satisfied = np.zeros(len(self.paths), np.int64)
        touched = np.zeros(len(self.paths), bool)
        for package, done in hits:
            np.add.at(satisfied, package, done)
            touched[package] = True
        return np.flatnonzero(touched & (self._open > 0) & (satisfied == self._open))

    def split(self, table: SharedInodes) -> _EnvRows:
        """One env's rows with links outside it: those held by a cleanable package dir (as positions in
        this index) and the others."""
        ino, found, nlink, blocks = _outside_rows(table)
        rows = self._devices.get(table.dev)
        if rows is None or not len(rows.ino) or not len(ino):
            return _EnvRows(table.dev, np.zeros(0, np.int64), np.zeros(0, np.int64), (ino, found, nlink, blocks))
        pos = np.minimum(np.searchsorted(rows.ino, ino), len(rows.ino) - 1)
        hit = rows.ino[pos] == ino
        miss = ~hit
        return _EnvRows(table.dev, pos[hit], found[hit], (ino[miss], found[miss], nlink[miss], blocks[miss]))

    def cache_hits(self, dev: int, parts: Sequence[_EnvRows]) -> tuple[I64, I64] | None:
        """The (package id, row satisfied) pairs of the cache rows ``parts`` (envs on ``dev``) link to,
        once all those links go."""
        rows = self._devices.get(dev)
        if rows is None or not any(len(p.pos) for p in parts):
            return None
        if len(parts) == 1:
            pos, links = parts[0].pos, parts[0].found
        else:
            dense = np.zeros(len(rows.ino), np.int64)
            for part in parts:
                dense[part.pos] += part.found  # positions are unique within one env's rows
            pos = np.flatnonzero(dense)
            links = dense[pos]
        need = rows.need[pos]
        return rows.package[pos], ((need > 0) & (links >= need)).astype(np.int64)

    def freed_packages(self, hits: Iterable[tuple[I64, I64]]) -> tuple[tuple[str, int], ...]:
        return self.package_sizes(self._cleaned(hits))

    def cleaned(self, hits: Iterable[tuple[I64, I64]]) -> I64:
        """Package ids cleaned once the links of ``hits`` (see :meth:`cache_hits`) go."""
        return self._cleaned(hits)

    def package_sizes(self, ids: I64) -> tuple[tuple[str, int], ...]:
        return tuple((self.paths[i], int(self._bytes[i])) for i in ids)

    def chunk_ids(self, caches: Iterable[PkgsUsage]) -> Iterable[tuple[str, PkgsChunk, I64]]:
        """Each chunk of ``caches`` (a cache once) with the package id of each of its package dirs (-1:
        not cleanable), as ``__init__`` numbered them."""
        seen: set[str] = set()
        next_id = 0
        for cache in caches:
            if cache.path in seen:
                continue
            seen.add(cache.path)
            for chunk in cache.chunks:
                ids = np.full(len(chunk.cleanable), -1, np.int64)
                for index, cleanable in enumerate(chunk.cleanable):
                    if cleanable:
                        ids[index] = next_id
                        next_id += 1
                yield cache.path, chunk, ids


def _outside_rows(table: SharedInodes) -> _Links:
    keep = table.found < table.nlink
    return table.ino[keep], table.found[keep].astype(np.int64), table.nlink[keep], table.blocks[keep]


def _combine(a: _Links, b: _Links) -> _Links:
    """Two tables' rows as one: links of an inode in both are added."""
    ino = np.concatenate([a[0], b[0]])
    distinct, first, inverse = np.unique(ino, return_index=True, return_inverse=True)
    links = np.zeros(len(distinct), np.int64)
    np.add.at(links, inverse, np.concatenate([a[1], b[1]]))
    return distinct, links, np.concatenate([a[2], b[2]])[first], np.concatenate([a[3], b[3]])[first]


def _merged(parts: Sequence[_Links]) -> _Links:
    """Rows of several envs combined pairwise: an inode linked from many envs is one row early, so
    memory stays near the number of distinct inodes rather than of all rows."""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    return _combine(_merged(parts[:half]), _merged(parts[half:]))


def reclaimable(index: CacheIndex, envs: Sequence[EnvUsage], split: dict[str, _EnvRows] | None = None) -> Freed:
    """What deleting every env of ``envs`` and then running ``conda clean --packages`` frees, beyond
    what that clean alone would free (see the module doc). ``split`` memoises each env's rows as
    :meth:`CacheIndex.split` divides them, by prefix, across calls on one index."""
    split = {} if split is None else split
    total = sum(env.usage.unique_bytes for env in envs)
    by_dev: dict[int, list[_EnvRows]] = {}
    for env in envs:
        if env.prefix not in split:
            split[env.prefix] = index.split(env.usage.shared)
        by_dev.setdefault(env.usage.dev, []).append(split[env.prefix])
    hits: list[tuple[I64, I64]] = []
    for dev, parts in by_dev.items():
        pairs = index.cache_hits(dev, parts)
        if pairs is not None:
            hits.append(pairs)
        others = [p.other for p in parts if len(p.other[0])]
        if len(others) > 1:  # one env's own rows all have links outside it: none is freed by it alone
            _, links, nlink, blocks = _merged(others)
            total += int(blocks[links >= nlink.astype(np.int64)].sum()) * BLOCK_SIZE
    cleaned = index.cleaned(hits)
    packages = index.package_sizes(cleaned)
    total += sum(size for _, size in packages)
    if index.pieces is not None:
        removed = index.alone.copy()
        removed[cleaned] = True
        env_ids = index.pieces.env_ids
        total += index.pieces.freed({env_ids[env.prefix] for env in envs if env.prefix in env_ids}, removed)
    return Freed(total, packages)


def _deletable(env: EnvUsage) -> bool:
    """conda cannot remove a root's base env (its prefix is the root itself)."""
    return env.prefix != env.root


def reclaim_figures(
    envs: Sequence[EnvUsage], index: CacheIndex, roots: Sequence[str], stale_after: float, now: float
) -> Reclaim:
    """Per env, per (root, owner) and per root's stale envs, what deleting them and cleaning frees
    (``index``: every cache, and with reflinks every env, of the snapshot). An env is stale when its last
    conda transaction is more than ``stale_after`` seconds before ``now`` (a Unix time); one without a
    history file has no known age and is never stale."""
    split: dict[str, _EnvRows] = {}
    per_env = tuple((env.prefix, reclaimable(index, [env], split).bytes) for env in envs)
    groups: dict[tuple[str, str], list[EnvUsage]] = {}
    stale: dict[str, list[EnvUsage]] = {root: [] for root in roots if root}
    for env in filter(_deletable, envs):
        groups.setdefault((env.root, env.contents.owner), []).append(env)
        last = env.contents.last_transaction
        if env.root in stale and last is not None and now - last > stale_after:
            stale[env.root].append(env)
    owners = tuple(
        OwnerReclaim(root, owner, len(members), reclaimable(index, members, split).bytes)
        for (root, owner), members in sorted(groups.items())
    )
    stale_sets = tuple(
        StaleReclaim(root, len(members), reclaimable(index, members, split).bytes if members else 0)
        for root, members in stale.items()
    )
    return Reclaim(per_env, owners, stale_sets, stale_after, now)
