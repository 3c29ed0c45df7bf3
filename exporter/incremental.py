"""Incremental rescans: walk only the changed trees, re-account every other one from link deltas.

* an env target rescans that env in-process (or drops it when it is gone) and also rescans its
  root's package cache, because installing links cache files that were private to the cache (only a
  walk of the cache sees them become shared) and removing can make cache packages unreferenced;
* a root target re-discovers the root: new envs are scanned, removed ones dropped, ``envs/`` rewalked;
* every tree *not* rescanned is re-accounted without walking it, from the change in links per inode
  of the rescanned trees (:func:`exporter.account.link_delta`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from exporter.account import TreeUsage, apply_link_delta, link_delta
from exporter.discover import RootLayout
from exporter.scanner import ScanOptions, log_errors, pkgs_usage, root_usage, scan_env, scan_pkgs, scan_rest
from exporter.snapshot import EnvUsage, PkgsUsage, Snapshot
from exporter.walk import WalkError
from exporter.watch import Target

__all__ = ["rescan"]

log = logging.getLogger(__name__)


def rescan(
    old: Snapshot,
    targets: set[Target],
    *,
    roots: list[str],
    current: dict[str, RootLayout],
    discover: Callable[[str, dict[str, RootLayout]], RootLayout],
    options: ScanOptions,
    started: float,
) -> tuple[Snapshot, dict[str, RootLayout]]:
    """Rescan ``targets`` of ``old`` and re-account every other tree; the new Snapshot and layouts.

    ``current`` are the layouts ``old`` was made with; ``discover`` re-discovers one root (``""``, the
    envs outside any root, last, as it needs the others); ``started`` is a ``time.monotonic()``.
    """
    rediscover = {t.root for t in targets if t.kind == "root" and t.root in roots}
    layouts = dict(current)
    for root in sorted(rediscover, key=lambda r: r == ""):  # "" last: it needs the others
        layouts[root] = discover(root, layouts)
    envs_now = {e.prefix: e for r in roots for e in layouts[r].envs}
    old_envs = {e.prefix: e for e in old.envs}
    rescan_envs = {t.path for t in targets if t.kind == "env" and t.path in envs_now}
    rescan_envs |= set(envs_now) - set(old_envs)
    removed_envs = set(old_envs) - set(envs_now)
    env_roots = {envs_now[p].root for p in rescan_envs} | {old_envs[p].root for p in removed_envs}
    if "" in env_roots:  # envs outside roots link from the roots' caches too
        env_roots |= {r for r in roots if r}
    rescan_pkgs = {(t.root, t.path) for t in targets if t.kind == "pkgs"}
    rescan_pkgs |= {(r, d) for r in env_roots for d in layouts[r].pkgs_dirs}
    rescan_pkgs = {(r, d) for r, d in rescan_pkgs if d in layouts[r].pkgs_dirs}

    new_envs = {p: scan_env(envs_now[p], options) for p in sorted(rescan_envs)}
    new_pkgs = {d: scan_pkgs(r, d, options) for r, d in sorted(rescan_pkgs)}
    new_rest = {r: scan_rest(layouts[r], options) for r in sorted(rediscover)}
    old_pkgs = {p.path: p for p in old.pkgs}
    old_rest = dict(old.rest)

    old_tables = [old_envs[p].usage.shared for p in rescan_envs | removed_envs if p in old_envs]
    old_tables += [c.usage.shared for d in new_pkgs if d in old_pkgs for c in old_pkgs[d].chunks]
    old_tables += [old_rest[r].shared for r in new_rest if r in old_rest]
    new_tables = [e.usage.shared for e in new_envs.values()]
    new_tables += [c.usage.shared for p in new_pkgs.values() for c in p.chunks]
    new_tables += [u.shared for u in new_rest.values() if u is not None]
    deltas = link_delta(old_tables, new_tables)

    def settle(usage: TreeUsage) -> TreeUsage:
        return apply_link_delta(usage, deltas) if deltas else usage

    envs: list[EnvUsage] = []
    pkgs: list[PkgsUsage] = []
    rest: list[tuple[str, TreeUsage]] = []
    root_totals = []
    for root in roots:
        layout = layouts[root]
        root_envs = [
            new_envs[e.prefix] if e.prefix in new_envs else replace(old_envs[e.prefix], usage=settle(
                old_envs[e.prefix].usage))
            for e in layout.envs
            if e.prefix in new_envs or e.prefix in old_envs
        ]
        root_pkgs = []
        for pkgs_dir in layout.pkgs_dirs:
            if pkgs_dir in new_pkgs:
                root_pkgs.append(new_pkgs[pkgs_dir])
            elif pkgs_dir in old_pkgs:
                chunks = [replace(c, usage=settle(c.usage)) for c in old_pkgs[pkgs_dir].chunks]
                root_pkgs.append(pkgs_usage(root, pkgs_dir, chunks))
        rest_usage = new_rest[root] if root in new_rest else old_rest.get(root)
        if rest_usage is not None and root not in new_rest:
            rest_usage = settle(rest_usage)
        root_rest = [rest_usage] if rest_usage is not None else []
        if root:  # envs outside any root have no root totals
            root_totals.append(root_usage(layout, root_envs, root_pkgs, root_rest))
        envs.extend(root_envs)
        pkgs.extend(root_pkgs)
        rest.extend((root, u) for u in root_rest)

    errors: list[WalkError] = [e for u in new_envs.values() for e in u.usage.errors]
    errors += [e for p in new_pkgs.values() for e in p.errors]
    errors += [e for u in new_rest.values() if u is not None for e in u.errors]
    log_errors(errors)
    duration = time.monotonic() - started
    log.info(
        "rescanned %d env(s), %d cache(s), %d root(s), dropped %d env(s) in %.3f s",
        len(new_envs), len(new_pkgs), len(new_rest), len(removed_envs), duration,
    )
    snapshot = Snapshot(
        roots=tuple(root_totals),
        envs=tuple(envs),
        pkgs=tuple(pkgs),
        completed_at=time.time(),
        duration_seconds=duration,
        errors=tuple(errors),
        rest=tuple(rest),
    )
    return snapshot, layouts
