"""Snapshot stage, assembly: the one way per-tree results become root and cache totals and a Snapshot.

A full scan and an incremental rescan both end here. The only difference between them is whether
the totals are counted from every inode table (:func:`~exporter.account.links.distinct_bytes`) or
updated from the previous snapshot and what changed
(:func:`~exporter.account.links.distinct_bytes_update`); both give the same numbers.

Where files share extents by reflink, every tree is settled against all the others first
(:func:`~exporter.account.extents.settle_trees`): what a tree references twice counts as its own only
when no other tree references it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from exporter.account.extents import settle_trees
from exporter.account.links import distinct_bytes, distinct_bytes_update
from exporter.account.reclaim import CacheIndex, reclaim_figures
from exporter.discover.roots import RootLayout
from exporter.model import EnvUsage, PkgsChunk, PkgsUsage, RootUsage, Snapshot, TreeUsage, WalkError

__all__ = ["CacheParts", "RootParts", "assemble", "log_errors", "root_trees"]

log = logging.getLogger(__name__)

# Errors logged one by one per scan; the rest are summarised (an unreadable tree can hold millions).
LOGGED_ERRORS_PER_SCAN = 20


@dataclass(frozen=True)
class CacheParts:
    """The accounted chunks of one package cache. ``before`` is the cache as last published when
    ``chunks`` pair with its chunks one to one (re-accounted or walked again chunk by chunk): its
    total is then updated from the change instead of counted afresh."""

    path: str
    chunks: tuple[PkgsChunk, ...]
    before: PkgsUsage | None = None


@dataclass(frozen=True)
class RootParts:
    """Everything accounted of one root (``layout.path == ""``: the envs outside any root, which
    get no root totals)."""

    layout: RootLayout
    envs: tuple[EnvUsage, ...]
    caches: tuple[CacheParts, ...]
    rest: tuple[TreeUsage, ...]


def filesystem_usage(path: str) -> tuple[int, int]:
    """Size and space available to unprivileged users of the filesystem holding ``path``, in bytes."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return 0, 0
    return vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize


def root_trees(
    envs: Sequence[EnvUsage], pkgs: Sequence[PkgsUsage], rest: Sequence[TreeUsage]
) -> dict[tuple[str, ...], TreeUsage]:
    """The trees making up a root, in the order its total counts them, keyed by what each is (so an
    incremental rescan can pair a tree before and after a change)."""
    keyed: dict[tuple[str, ...], TreeUsage] = {("env", e.prefix): e.usage for e in envs}
    keyed.update(((("chunk", p.path, str(i)), c.usage) for p in pkgs for i, c in enumerate(p.chunks)))
    keyed.update(((("rest", str(i)), u) for i, u in enumerate(rest)))
    return keyed


def _cache_usage(root: str, cache: CacheParts) -> PkgsUsage:
    chunks = cache.chunks
    before = cache.before
    if before is not None and len(before.chunks) == len(chunks):
        pairs = [(b.usage, a.usage) for b, a in zip(before.chunks, chunks, strict=True)]
        distinct = distinct_bytes_update(before.bytes, pairs)
    else:
        distinct = distinct_bytes(c.usage for c in chunks)
    return PkgsUsage(
        root=root,
        path=cache.path,
        bytes=distinct,
        apparent_bytes=sum(c.usage.apparent_bytes for c in chunks),
        packages=sum(c.packages for c in chunks),
        unreferenced_packages=sum(c.unreferenced_packages for c in chunks),
        unreferenced_bytes=sum(c.unreferenced_bytes for c in chunks),
        tarballs=sum(c.tarballs for c in chunks),
        tarball_bytes=sum(c.tarball_bytes for c in chunks),
        chunks=chunks,
        index_cache_bytes=sum(c.index_cache_bytes for c in chunks),
        leftover_bytes=sum(c.leftover_bytes for c in chunks),
    )


def _updated_root_bytes(
    previous: Snapshot, root: str, envs: Sequence[EnvUsage], pkgs: Sequence[PkgsUsage], rest: Sequence[TreeUsage]
) -> int | None:
    """The root's ``distinct_bytes`` from its total in ``previous`` and what changed, or None (count it
    afresh: the root is new, or its trees' order changed)."""
    old_root = next((r for r in previous.roots if r.path == root), None)
    if old_root is None:
        return None
    before = root_trees(
        [e for e in previous.envs if e.root == root], [p for p in previous.pkgs if p.root == root],
        [u for r, u in previous.rest if r == root],
    )
    after = root_trees(envs, pkgs, rest)
    if list(after) != [k for k in before if k in after] + [k for k in after if k not in before]:
        return None  # the order changed (an env was renamed into the middle): keep the count exact
    # Before-trees in their old order, after-trees in their new one (checked above), each tree paired
    # with itself; an inode counts with the fewest blocks a table gives it, as in the totals being updated.
    pairs = [(before[k], after.get(k)) for k in before] + [(None, after[k]) for k in after if k not in before]
    return distinct_bytes_update(old_root.bytes, pairs)


def _root_usage(parts: RootParts, pkgs: Sequence[PkgsUsage], previous: Snapshot | None) -> RootUsage:
    layout = parts.layout
    trees = list(root_trees(parts.envs, pkgs, parts.rest).values())
    distinct = _updated_root_bytes(previous, layout.path, parts.envs, pkgs, parts.rest) if previous else None
    size, avail = filesystem_usage(layout.path)
    return RootUsage(
        path=layout.path,
        bytes=distinct_bytes(trees) if distinct is None else distinct,
        apparent_bytes=sum(t.apparent_bytes for t in trees),
        envs=len(parts.envs),
        ignored_dirs=len(layout.ignored_dirs),
        filesystem_size_bytes=size,
        filesystem_avail_bytes=avail,
    )


def _settled(parts: Sequence[RootParts]) -> list[RootParts]:
    """``parts`` with every tree's reflinked bytes settled against every other tree's (a cache listed by
    two roots is one tree); as they are when no tree has extent rows."""
    trees: dict[tuple[str, ...], TreeUsage] = {}
    for part in parts:
        trees.update((("env", e.prefix), e.usage) for e in part.envs)
        for cache in part.caches:
            trees.update((("chunk", cache.path, str(i)), c.usage) for i, c in enumerate(cache.chunks))
        trees.update((("rest", part.layout.path, str(i)), u) for i, u in enumerate(part.rest))
    if not any(len(t.extent_start) for t in trees.values()):
        return list(parts)
    settled = dict(zip(trees, settle_trees(list(trees.values())), strict=True))
    return [
        replace(
            part,
            envs=tuple(replace(e, usage=settled[("env", e.prefix)]) for e in part.envs),
            caches=tuple(
                replace(cache, chunks=tuple(
                    replace(c, usage=settled[("chunk", cache.path, str(i))]) for i, c in enumerate(cache.chunks)
                ))
                for cache in part.caches
            ),
            rest=tuple(settled[("rest", part.layout.path, str(i))] for i in range(len(part.rest))),
        )
        for part in parts
    ]


def assemble(
    parts: Sequence[RootParts],
    errors: Sequence[WalkError],
    started: float,
    stale_after: float,
    *,
    previous: Snapshot | None = None,
    clock: Callable[[], float] = time.time,
) -> Snapshot:
    """The Snapshot of ``parts``. ``errors`` are those met by the walks behind it (logged here, and
    counted by the store when it is published); ``started`` is the ``time.monotonic()`` at which its
    scan began; envs idle for more than ``stale_after`` seconds count as stale; with ``previous``, root
    totals are updated from it (see the module doc)."""
    roots: list[RootUsage] = []
    envs: list[EnvUsage] = []
    pkgs: list[PkgsUsage] = []
    rest: list[tuple[str, TreeUsage]] = []
    for part in _settled(parts):
        root = part.layout.path
        caches = [_cache_usage(root, cache) for cache in part.caches]
        if root:  # envs outside any root have no root totals
            roots.append(_root_usage(part, caches, previous))
        envs.extend(part.envs)
        pkgs.extend(caches)
        rest.extend((root, usage) for usage in part.rest)
    log_errors(errors)
    completed = clock()
    index = CacheIndex(pkgs, envs, [usage for _, usage in rest])
    if index.pieces is not None and index.pieces.clean_alone:  # reflinked pieces only unused packages hold
        alone = index.pieces.clean_alone
        pkgs = [replace(p, unreferenced_bytes=p.unreferenced_bytes + alone.get(p.path, 0)) for p in pkgs]
    return Snapshot(
        roots=tuple(roots),
        envs=tuple(envs),
        pkgs=tuple(pkgs),
        completed_at=completed,
        duration_seconds=time.monotonic() - started,
        errors=tuple(errors),
        rest=tuple(rest),
        reclaim=reclaim_figures(envs, index, [p.layout.path for p in parts], stale_after, completed),
    )


def log_errors(errors: Sequence[WalkError]) -> None:
    """One warning per error up to a limit, then one summary line, so a broken tree cannot flood logs."""
    for error in errors[:LOGGED_ERRORS_PER_SCAN]:
        log.warning("scan error (%s) at %r: %s", error.kind, error.path, error.message)
    if len(errors) > LOGGED_ERRORS_PER_SCAN:
        log.warning("%d more scan errors not logged one by one", len(errors) - LOGGED_ERRORS_PER_SCAN)
