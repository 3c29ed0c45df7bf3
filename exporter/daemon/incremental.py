"""Daemon, incremental rescans: walk only the changed trees, re-account every other one from link deltas.

* an env target rescans that env in-process (or drops it when it is gone) and also rescans its
  root's package cache, because installing links cache files that were private to the cache (only a
  walk of the cache sees them become shared) and removing can make cache packages unreferenced;
* a root target re-discovers the root: new envs are scanned, removed ones dropped, ``envs/`` rewalked;
* every tree *not* rescanned is re-accounted without walking it, from the change in links per inode
  of the rescanned trees (:func:`exporter.account.delta.link_delta`); the results are assembled into a Snapshot as a
  full scan's are, with totals updated from the change (:func:`exporter.snapshot.assemble.assemble`);
* a *suspect* tree (one walked while a change was under way elsewhere: its walk may already have seen links
  that the change's delta would then count a second time) is walked again instead, but only when the delta
  touches one of its inodes.

Re-discovery (:func:`rediscover`) is a step of its own, so that the daemon can watch a new env before
its first walk: a change made after the walk is then always reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from exporter.account.delta import LinkDelta, apply_link_delta, link_delta
from exporter.account.extents import stale_trees
from exporter.account.trees import measure_cache, measure_env, measure_rest, remeasure_chunk
from exporter.daemon.targets import Target
from exporter.discover.roots import RootLayout
from exporter.model import EnvUsage, PkgsChunk, PkgsUsage, ScanOptions, SharedInodes, Snapshot, TreeUsage, WalkError
from exporter.snapshot.assemble import CacheParts, RootParts, assemble
from exporter.snapshot.transient import keep_chunk, keep_env

__all__ = ["Rescanned", "rediscover", "rescan"]

log = logging.getLogger(__name__)


def _chunks_holding(chunks: Sequence[PkgsChunk], pkgs_dir: str, touched: set[str] | None) -> set[int] | None:
    """Indexes of the chunks of ``pkgs_dir`` holding the ``touched`` cache entries; None when the whole
    cache must be walked (no chunks yet, unknown entries, or an entry no chunk holds: newly extracted).
    An entry is this cache's when it lies below it, directly (conda) or in a channel/platform dir
    (mamba >= 2.6)."""
    if touched is None or not chunks:
        return None
    inside = pkgs_dir.rstrip(os.sep) + os.sep
    here = {t for t in touched if t.startswith(inside)}
    wanted = {i for i, chunk in enumerate(chunks) if here & set(chunk.package_dirs)}
    held = {d for i in wanted for d in chunks[i].package_dirs}
    return wanted if here <= held else None


def _touched_entries(
    old_envs: dict[str, EnvUsage], new_envs: dict[str, EnvUsage], changed: set[str]
) -> set[str] | None:
    """Cache entries whose links the changed envs gained or lost (packages added or removed); None
    when some record does not say where it came from, so any cache entry may be involved."""
    touched: set[str] = set()
    for prefix in changed:
        before = old_envs[prefix].contents.sources if prefix in old_envs else ()
        after = new_envs[prefix].contents.sources if prefix in new_envs else ()
        if before is None or after is None:
            return None
        touched |= set(before) ^ set(after)
    return touched


def rediscover(
    targets: set[Target],
    roots: list[str],
    current: dict[str, RootLayout],
    discover: Callable[[str, dict[str, RootLayout]], RootLayout],
) -> dict[str, RootLayout]:
    """``current`` with each root that a root target of ``targets`` names discovered again (``""``, the
    envs outside any root, last: it needs the others)."""
    layouts = dict(current)
    for root in sorted({t.root for t in targets if t.kind == "root" and t.root in roots}, key=lambda r: r == ""):
        layouts[root] = discover(root, layouts)
    return layouts


@dataclass(frozen=True)
class Rescanned:
    """A rescan's result; ``walked``: the env prefixes and cache dirs walked (wholly or a chunk)."""

    snapshot: Snapshot
    walked: frozenset[str]


def _touches(table: SharedInodes, deltas: dict[int, LinkDelta]) -> bool:
    """Whether ``deltas`` change the links of an inode of ``table`` (sorted by inode)."""
    delta = deltas.get(table.dev)
    if delta is None or not len(table) or not len(delta.ino):
        return False
    pos = np.minimum(np.searchsorted(table.ino, delta.ino), len(table) - 1)
    return bool(np.any(table.ino[pos] == delta.ino))


def _reflink_stale(
    old_envs: dict[str, EnvUsage], old_pkgs: dict[str, PkgsUsage], *, new_envs: dict[str, EnvUsage],
    new_pkgs: dict[str, list[PkgsChunk]], replaced: dict[str, dict[int, PkgsChunk]], removed: set[str],
) -> list[str]:
    """Envs not walked again holding reflinked bytes that the trees walked again stopped referencing: their
    shared flag may have cleared (conda clean removed the package dir they were reflinked from, or the one
    env that shared them is gone), so they are walked again (:func:`exporter.account.extents.stale_trees`).
    None where nothing is reflinked."""
    before = [old_envs[p].usage for p in (*new_envs, *removed) if p in old_envs]
    before += [c.usage for d in new_pkgs if d in old_pkgs for c in old_pkgs[d].chunks]
    before += [old_pkgs[d].chunks[i].usage for d, chunks in replaced.items() for i in chunks]
    after = [e.usage for e in new_envs.values()] + [c.usage for chunks in new_pkgs.values() for c in chunks]
    after += [c.usage for chunks in replaced.values() for c in chunks.values()]
    others = sorted(p for p in old_envs if p not in new_envs and p not in removed)
    return [others[i] for i in stale_trees(before, after, [old_envs[p].usage for p in others])]


def rescan(
    old: Snapshot,
    targets: set[Target],
    *,
    roots: list[str],
    layouts: dict[str, RootLayout],
    options: ScanOptions,
    started: float,
    suspect: frozenset[str] = frozenset(),
) -> Rescanned:
    """Rescan ``targets`` of ``old`` and re-account every other tree.

    ``layouts`` are the layouts now, the roots named by root targets re-discovered already
    (:func:`rediscover`); ``started`` is a ``time.monotonic()``. ``suspect``: env prefixes and cache dirs
    whose last walk ran while a change elsewhere was under way; each is walked again (an env whole, a
    cache by the chunks concerned) where the link delta touches it, instead of taking the delta.
    """
    rediscovered = {t.root for t in targets if t.kind == "root" and t.root in roots}
    envs_now = {e.prefix: e for r in roots for e in layouts[r].envs}
    old_envs = {e.prefix: e for e in old.envs}
    rescan_envs = {t.path for t in targets if t.kind == "env" and t.path in envs_now}
    rescan_envs |= set(envs_now) - set(old_envs)
    removed_envs = set(old_envs) - set(envs_now)
    env_roots = {envs_now[p].root for p in rescan_envs} | {old_envs[p].root for p in removed_envs}
    if "" in env_roots:  # envs outside roots link from the roots' caches too
        env_roots |= {r for r in roots if r}
    old_pkgs = {p.path: p for p in old.pkgs}
    held: list[WalkError] = []  # transient errors of walks whose trees keep their previous result

    def walk_env(prefix: str) -> EnvUsage:
        """The env walked again, or its previous result when the walk met a transient error."""
        walked = measure_env(envs_now[prefix], options)
        kept = keep_env(walked, old_envs.get(prefix))
        if kept is not walked:
            held.extend(walked.usage.errors)
        return kept

    new_envs = {p: walk_env(p) for p in sorted(rescan_envs)}
    touched = _touched_entries(old_envs, new_envs, rescan_envs | removed_envs)
    whole = {(t.root, t.path) for t in targets if t.kind == "pkgs"}
    partial: dict[tuple[str, str], set[int]] = {}  # (root, cache) -> indexes of chunks to walk again
    for root in sorted(env_roots):
        for pkgs_dir in layouts[root].pkgs_dirs:
            known = old_pkgs[pkgs_dir].chunks if pkgs_dir in old_pkgs else ()
            wanted = _chunks_holding(known, pkgs_dir, touched)
            if wanted is None:
                whole.add((root, pkgs_dir))
            elif wanted:
                partial[(root, pkgs_dir)] = wanted
    whole = {(r, d) for r, d in whole if d in layouts[r].pkgs_dirs}

    def walk_cache(root: str, pkgs_dir: str) -> list[PkgsChunk]:
        """The cache walked again, each chunk that met a transient error as it was before, if it was."""
        before = old_pkgs[pkgs_dir].chunks if pkgs_dir in old_pkgs else ()
        chunks = []
        for walked in measure_cache(root, pkgs_dir, options):
            chunks.append(keep_chunk(walked, before))
            if chunks[-1] is not walked:
                held.extend(walked.usage.errors)
        return chunks

    new_pkgs = {d: walk_cache(r, d) for r, d in sorted(whole)}
    old_tables = [c.usage.shared for d in new_pkgs if d in old_pkgs for c in old_pkgs[d].chunks]
    new_tables = [c.usage.shared for chunks in new_pkgs.values() for c in chunks]
    replaced: dict[str, dict[int, PkgsChunk]] = {}  # cache -> chunk index -> the chunk walked again

    def walk_chunk(pkgs_dir: str, i: int) -> None:
        before_chunk = old_pkgs[pkgs_dir].chunks[i]
        walked = remeasure_chunk(before_chunk, options)
        after_chunk = keep_chunk(walked, (before_chunk,))
        if after_chunk is not walked:
            held.extend(walked.usage.errors)
        replaced.setdefault(pkgs_dir, {})[i] = after_chunk
        old_tables.append(before_chunk.usage.shared)
        new_tables.append(after_chunk.usage.shared)

    for (_root, pkgs_dir), indexes in sorted(partial.items()):
        if pkgs_dir not in new_pkgs:
            for i in sorted(indexes):
                walk_chunk(pkgs_dir, i)
    new_rest = {r: measure_rest(layouts[r], options) for r in sorted(rediscovered)}
    old_rest = dict(old.rest)

    old_tables += [old_envs[p].usage.shared for p in rescan_envs | removed_envs if p in old_envs]
    old_tables += [old_rest[r].shared for r in new_rest if r in old_rest]
    new_tables += [e.usage.shared for e in new_envs.values()]
    new_tables += [u.shared for u in new_rest.values() if u is not None]
    deltas = link_delta(old_tables, new_tables)
    while suspect and deltas:  # walk suspects the delta touches, until the delta touches no other
        walk_envs = sorted(p for p in suspect if p in envs_now and p in old_envs and p not in new_envs
                           and _touches(old_envs[p].usage.shared, deltas))
        walk_chunks = sorted((d, i) for d in suspect if d in old_pkgs and d not in new_pkgs
                             for i, c in enumerate(old_pkgs[d].chunks)
                             if i not in replaced.get(d, {}) and _touches(c.usage.shared, deltas))
        if not walk_envs and not walk_chunks:
            break
        for prefix in walk_envs:
            new_envs[prefix] = walk_env(prefix)
            old_tables.append(old_envs[prefix].usage.shared)
            new_tables.append(new_envs[prefix].usage.shared)
        for pkgs_dir, i in walk_chunks:
            walk_chunk(pkgs_dir, i)
        deltas = link_delta(old_tables, new_tables)

    stale = _reflink_stale(old_envs, old_pkgs, new_envs=new_envs, new_pkgs=new_pkgs, replaced=replaced,
                           removed=removed_envs)
    for prefix in stale:
        new_envs[prefix] = walk_env(prefix)
        old_tables.append(old_envs[prefix].usage.shared)
        new_tables.append(new_envs[prefix].usage.shared)
    if stale:
        deltas = link_delta(old_tables, new_tables)

    def settle(usage: TreeUsage) -> TreeUsage:
        return apply_link_delta(usage, deltas) if deltas else usage

    parts: list[RootParts] = []
    for root in roots:
        layout = layouts[root]
        envs = tuple(
            new_envs[e.prefix] if e.prefix in new_envs else replace(
                old_envs[e.prefix], usage=settle(old_envs[e.prefix].usage))
            for e in layout.envs
            if e.prefix in new_envs or e.prefix in old_envs
        )
        caches: list[CacheParts] = []
        for pkgs_dir in layout.pkgs_dirs:
            if pkgs_dir in new_pkgs:
                caches.append(CacheParts(pkgs_dir, tuple(new_pkgs[pkgs_dir])))
            elif pkgs_dir in old_pkgs:
                walked_again = replaced.get(pkgs_dir, {})
                before = old_pkgs[pkgs_dir]
                chunks = tuple(
                    walked_again[i] if i in walked_again else replace(c, usage=settle(c.usage))
                    for i, c in enumerate(before.chunks)
                )
                caches.append(CacheParts(pkgs_dir, chunks, before))
        rest_usage = new_rest[root] if root in new_rest else old_rest.get(root)
        if rest_usage is not None and root not in new_rest:
            rest_usage = settle(rest_usage)
        parts.append(RootParts(layout, envs, tuple(caches), (rest_usage,) if rest_usage is not None else ()))

    errors: list[WalkError] = [e for u in new_envs.values() for e in u.usage.errors]
    errors += [e for chunks in new_pkgs.values() for c in chunks for e in c.usage.errors]
    errors += [e for chunks in replaced.values() for c in chunks.values() for e in c.usage.errors]
    errors += [e for u in new_rest.values() if u is not None for e in u.errors]
    errors += held
    snapshot = assemble(parts, errors, started, options.stale_after, previous=old)
    log.info(
        "rescanned %d env(s), %d whole cache(s), %d cache chunk(s), %d root(s), dropped %d env(s) in %.3f s",
        len(new_envs), len(new_pkgs), sum(map(len, replaced.values())), len(new_rest), len(removed_envs),
        snapshot.duration_seconds,
    )
    return Rescanned(snapshot, frozenset(new_envs) | frozenset(new_pkgs) | frozenset(replaced))
