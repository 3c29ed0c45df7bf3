"""Scan orchestration: run the walks of a full scan on worker processes and assemble a Snapshot.

Each env and each chunk of a package cache is an independent task (an env's unique/shared split
needs only that env's own walk), so tasks run on a small pool of processes; the GIL makes threads
slower than one process for this work (shared/FACTS.md). Only accounted results travel back: counters
and the table of shared inodes, not per-path data.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from exporter.account import TreeUsage, account_tree, distinct_bytes
from exporter.condameta import read_env_metadata
from exporter.contents import account_contents, ownership
from exporter.discover import EnvLocation, RootLayout
from exporter.pkgs import PkgsChunk, list_package_dirs, scan_pkgs_chunk
from exporter.snapshot import EnvUsage, PkgsUsage, RootUsage, Snapshot
from exporter.walk import WalkError, walk_tree

__all__ = [
    "ScanOptions", "full_scan", "pkgs_usage", "root_trees", "root_usage", "scan_env", "scan_pkgs", "scan_rest"
]

log = logging.getLogger(__name__)

# Package dirs per cache chunk: an env change walks again each chunk holding a package it linked or
# unlinked, so chunks are small; each is one task of a full scan, so not so small that IPC dominates.
PACKAGES_PER_CHUNK = 16
# Errors logged one by one per scan; the rest are summarised (an unreadable tree can hold millions).
LOGGED_ERRORS_PER_SCAN = 20


@dataclass(frozen=True)
class ScanOptions:
    """How to scan: ``workers`` processes (1 = in this process), whether to descend into mounts."""

    workers: int = 2
    cross_filesystems: bool = False
    # Added to the worker processes' nice value (reconcile scans run at low priority).
    nice: int = 0
    # Per env, export the bytes of this many biggest packages (0: none; labels cost cardinality).
    top_packages: int = 0


@dataclass(frozen=True)
class _EnvTask:
    env: EnvLocation


@dataclass(frozen=True)
class _RestTask:
    """Root-only leftovers: ``ROOT/envs`` itself, stray files and non-env dirs in it."""

    root: str
    path: str
    exclude: frozenset[str]


@dataclass(frozen=True)
class _PkgsTask:
    root: str
    pkgs_dir: str
    package_dirs: tuple[str, ...]
    include_top: bool
    all_package_dirs: frozenset[str]


_Task = _EnvTask | _RestTask | _PkgsTask
_Result = EnvUsage | TreeUsage | PkgsChunk


def scan_env(env: EnvLocation, options: ScanOptions) -> EnvUsage:
    """Walk and account one env (in the calling process)."""
    started = time.monotonic()
    meta = read_env_metadata(env.prefix)
    owned = ownership(meta, env.pkgs_dirs)
    walk = walk_tree(env.prefix, env.exclude, options.cross_filesystems, owned)
    walk.errors.extend(meta.errors)
    return EnvUsage(
        root=env.root,
        name=env.name,
        prefix=env.prefix,
        usage=account_tree(walk),
        scanned_at=time.time(),
        scan_seconds=time.monotonic() - started,
        contents=account_contents(walk, meta, owned, options.top_packages),
    )


def scan_pkgs(root: str, pkgs_dir: str, options: ScanOptions) -> PkgsUsage:
    """Walk and account one whole package cache in the calling process (all its chunks)."""
    listing_errors: list[WalkError] = []
    layout = RootLayout(path=root, envs=(), pkgs_dirs=(pkgs_dir,), envs_container=None, ignored_dirs=())
    tasks = _tasks_for(layout, listing_errors)
    chunks = [r for r in (_run_task(t, options) for t in tasks) if isinstance(r, PkgsChunk)]
    if listing_errors and chunks:  # keep listing errors visible in the cache's errors
        first = chunks[0]
        usage = replace(first.usage, errors=first.usage.errors + tuple(listing_errors))
        chunks[0] = replace(first, usage=usage)
    return pkgs_usage(root, pkgs_dir, chunks)


def scan_rest(layout: RootLayout, options: ScanOptions) -> TreeUsage | None:
    """Walk what of ``layout`` is neither env nor cache: ``ROOT/envs`` minus the env prefixes."""
    if not layout.envs_container:
        return None
    env_prefixes = frozenset(e.prefix for e in layout.envs if e.prefix != layout.path)
    return account_tree(walk_tree(layout.envs_container, env_prefixes, options.cross_filesystems))


def _run_task(task: _Task, options: ScanOptions) -> _Result:
    if isinstance(task, _EnvTask):
        return scan_env(task.env, options)
    if isinstance(task, _RestTask):
        return account_tree(walk_tree(task.path, task.exclude, options.cross_filesystems))
    return scan_pkgs_chunk(
        task.pkgs_dir,
        list(task.package_dirs),
        task.include_top,
        task.all_package_dirs,
        options.cross_filesystems,
    )


def _tasks_for(layout: RootLayout, listing_errors: list[WalkError]) -> list[_Task]:
    tasks: list[_Task] = []
    for pkgs_dir in layout.pkgs_dirs:
        package_dirs, errors = list_package_dirs(pkgs_dir)
        listing_errors.extend(errors)
        chunks = [package_dirs[i : i + PACKAGES_PER_CHUNK] for i in range(0, len(package_dirs), PACKAGES_PER_CHUNK)]
        everything = frozenset(package_dirs)
        # The cache dir itself and its top-level files (tarballs) are a chunk of their own: an env
        # change then walks again only the chunks of the packages it linked or unlinked.
        tasks.append(_PkgsTask(layout.path, pkgs_dir, (), True, everything))
        # Only the top chunk needs every package dir (to leave them out): a copy per chunk, pickled
        # both ways, cost tens of MB on a cache of thousands of packages.
        tasks.extend(_PkgsTask(layout.path, pkgs_dir, tuple(c), False, frozenset()) for c in chunks)
    tasks.extend(_EnvTask(env) for env in layout.envs)
    if layout.envs_container:
        env_prefixes = frozenset(e.prefix for e in layout.envs if e.prefix != layout.path)
        tasks.append(_RestTask(layout.path, layout.envs_container, env_prefixes))
    return tasks


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is fastest but unsafe once threads run (HTTP server, watchers); forkserver forks from a
    # clean single-threaded server process instead.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    return multiprocessing.get_context(method)


def _run_all(tasks: Sequence[_Task], options: ScanOptions) -> Iterator[_Result]:
    # A niced scan runs in worker processes even with one worker: nice applies to whole processes.
    if options.nice == 0 and (options.workers <= 1 or len(tasks) <= 1):
        for task in tasks:
            yield _run_task(task, options)
        return
    workers = min(options.workers, len(tasks))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=os.nice, initargs=(options.nice,)
    ) as pool:
        yield from pool.map(_run_task, tasks, [options] * len(tasks), chunksize=1)


def pkgs_usage(root: str, pkgs_dir: str, chunks: list[PkgsChunk], distinct: int | None = None) -> PkgsUsage:
    """Totals of one package cache from its chunks; ``distinct``, when known, is ``distinct_bytes``
    of the chunks (an incremental rescan computes it from the change)."""
    return PkgsUsage(
        root=root,
        path=pkgs_dir,
        bytes=distinct_bytes(c.usage for c in chunks) if distinct is None else distinct,
        apparent_bytes=sum(c.usage.apparent_bytes for c in chunks),
        packages=sum(c.packages for c in chunks),
        unreferenced_packages=sum(c.unreferenced_packages for c in chunks),
        unreferenced_bytes=sum(c.unreferenced_bytes for c in chunks),
        tarballs=sum(c.tarballs for c in chunks),
        tarball_bytes=sum(c.tarball_bytes for c in chunks),
        chunks=tuple(chunks),
        index_cache_bytes=sum(c.index_cache_bytes for c in chunks),
        leftover_bytes=sum(c.leftover_bytes for c in chunks),
    )


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


def root_usage(
    layout: RootLayout,
    envs: Sequence[EnvUsage],
    pkgs: Sequence[PkgsUsage],
    rest: Sequence[TreeUsage],
    distinct: int | None = None,
) -> RootUsage:
    """Totals of one root from its already accounted parts; ``distinct``, when known, is
    ``distinct_bytes`` of its trees (an incremental rescan computes it from the change)."""
    trees = list(root_trees(envs, pkgs, rest).values())
    size, avail = filesystem_usage(layout.path)
    return RootUsage(
        path=layout.path,
        bytes=distinct_bytes(trees) if distinct is None else distinct,
        apparent_bytes=sum(t.apparent_bytes for t in trees),
        envs=len(envs),
        ignored_dirs=len(layout.ignored_dirs),
        filesystem_size_bytes=size,
        filesystem_avail_bytes=avail,
    )


def full_scan(
    layouts: Sequence[RootLayout],
    options: ScanOptions,
    clock: Callable[[], float] = time.time,
) -> Snapshot:
    """Walk every env and package cache of ``layouts`` and return the complete Snapshot."""
    started = time.monotonic()
    listing_errors: list[WalkError] = []
    tasks = [task for layout in layouts for task in _tasks_for(layout, listing_errors)]
    results = list(_run_all(tasks, options))

    env_results: dict[str, list[EnvUsage]] = {layout.path: [] for layout in layouts}
    rest_results: dict[str, list[TreeUsage]] = {layout.path: [] for layout in layouts}
    chunk_results: dict[tuple[str, str], list[PkgsChunk]] = {}
    for task, result in zip(tasks, results, strict=True):
        if isinstance(task, _EnvTask) and isinstance(result, EnvUsage):
            env_results[task.env.root].append(result)
        elif isinstance(task, _RestTask) and isinstance(result, TreeUsage):
            rest_results[task.root].append(result)
        elif isinstance(task, _PkgsTask) and isinstance(result, PkgsChunk):
            chunk_results.setdefault((task.root, task.pkgs_dir), []).append(result)

    all_envs: list[EnvUsage] = []
    all_pkgs: list[PkgsUsage] = []
    roots: list[RootUsage] = []
    for layout in layouts:
        pkgs = [pkgs_usage(layout.path, d, chunk_results.get((layout.path, d), [])) for d in layout.pkgs_dirs]
        envs = env_results[layout.path]
        if layout.path:  # envs outside any root have no root totals
            roots.append(root_usage(layout, envs, pkgs, rest_results[layout.path]))
        all_envs.extend(envs)
        all_pkgs.extend(pkgs)

    errors = list(listing_errors)
    errors.extend(e for env in all_envs for e in env.usage.errors)
    errors.extend(e for p in all_pkgs for e in p.errors)
    errors.extend(e for rest in rest_results.values() for t in rest for e in t.errors)
    log_errors(errors)
    return Snapshot(
        roots=tuple(roots),
        envs=tuple(all_envs),
        pkgs=tuple(all_pkgs),
        completed_at=clock(),
        duration_seconds=time.monotonic() - started,
        errors=tuple(errors),
        rest=tuple((root, usage) for root, usages in rest_results.items() for usage in usages),
    )


def log_errors(errors: Sequence[WalkError]) -> None:
    """One warning per error up to a limit, then one summary line, so a broken tree cannot flood logs."""
    for error in errors[:LOGGED_ERRORS_PER_SCAN]:
        log.warning("scan error (%s) at %r: %s", error.kind, error.path, error.message)
    if len(errors) > LOGGED_ERRORS_PER_SCAN:
        log.warning("%d more scan errors not logged one by one", len(errors) - LOGGED_ERRORS_PER_SCAN)
