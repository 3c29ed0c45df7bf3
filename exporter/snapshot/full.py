"""Snapshot stage, full scans: every tree of every root walked and accounted, on worker processes.

The tasks (:mod:`exporter.account.trees`) run on a small pool of processes
(:mod:`exporter.scan.workers`); their results are assembled into one Snapshot
(:func:`exporter.snapshot.assemble.assemble`), exactly as an incremental rescan's are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from exporter.account.trees import ChunkTask, EnvTask, RestTask, Task, layout_tasks, measure
from exporter.discover.roots import RootLayout
from exporter.model import EnvUsage, PkgsChunk, ScanOptions, Snapshot, TreeUsage, WalkError
from exporter.scan.budget import scan_budget
from exporter.scan.workers import run_tasks
from exporter.snapshot.assemble import CacheParts, RootParts, assemble
from exporter.snapshot.transient import keep_chunk, keep_env

__all__ = ["full_scan"]


def full_scan(
    layouts: Sequence[RootLayout],
    options: ScanOptions,
    clock: Callable[[], float] = time.time,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Walk every env and package cache of ``layouts`` and return the complete Snapshot, within the scan
    budget of ``options`` (:mod:`exporter.scan.budget`). An env or cache chunk whose walk met a transient
    error keeps its result in ``previous``, if it has one (:mod:`exporter.snapshot.transient`)."""
    started = time.monotonic()
    errors: list[WalkError] = []
    tasks: list[Task] = [task for layout in layouts for task in layout_tasks(layout, errors)]
    trees = [t for layout in layouts for t in (layout.path, *layout.pkgs_dirs, *(e.prefix for e in layout.envs))]
    with scan_budget(options, trees) as budgeted_options:
        results = list(run_tasks(measure, tasks, budgeted_options))
    old_envs = {e.prefix: e for e in previous.envs} if previous else {}
    old_chunks = {p.path: p.chunks for p in previous.pkgs} if previous else {}

    envs: dict[str, list[EnvUsage]] = {layout.path: [] for layout in layouts}
    rest: dict[str, list[TreeUsage]] = {layout.path: [] for layout in layouts}
    chunks: dict[tuple[str, str], list[PkgsChunk]] = {}
    for task, result in zip(tasks, results, strict=True):
        if isinstance(task, EnvTask) and isinstance(result, EnvUsage):
            envs[task.env.root].append(keep_env(result, old_envs.get(result.prefix)))
        elif isinstance(task, RestTask) and isinstance(result, TreeUsage):
            rest[task.root].append(result)
        elif isinstance(task, ChunkTask) and isinstance(result, PkgsChunk):
            kept = keep_chunk(result, old_chunks.get(task.pkgs_dir, ()))
            chunks.setdefault((task.root, task.pkgs_dir), []).append(kept)
        errors.extend(result.usage.errors if isinstance(result, EnvUsage | PkgsChunk) else result.errors)

    parts = [
        RootParts(
            layout=layout,
            envs=tuple(envs[layout.path]),
            caches=tuple(CacheParts(d, tuple(chunks.get((layout.path, d), []))) for d in layout.pkgs_dirs),
            rest=tuple(rest[layout.path]),
        )
        for layout in layouts
    ]
    return assemble(parts, errors, started, options.stale_after, clock=clock)
