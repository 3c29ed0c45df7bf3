"""Account stage, one tree at a time: walk a tree (the scan stage) and account it, as one task.

Each env, each chunk of a package cache and each root's leftover part (``ROOT/envs`` minus its envs)
is an independent task: an env's unique/shared split needs only that env's own walk. Tasks are plain
picklable values, so a full scan runs them on worker processes (:mod:`exporter.scan.workers`) and
only accounted results travel back: counters and the table of shared inodes, not per-path data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from exporter.account.contents import account_contents, foreign_sources, ownership
from exporter.account.links import account_tree
from exporter.account.reclaim import package_rows
from exporter.discover.roots import EnvLocation, RootLayout
from exporter.model import EnvUsage, PkgsChunk, ScanOptions, TreeUsage, WalkError
from exporter.scan.budget import budgeted
from exporter.scan.cache import CacheChunkWalk, walk_pkgs_chunk
from exporter.scan.cachelayout import list_cache
from exporter.scan.records import read_env_metadata
from exporter.scan.walk import walk_tree

__all__ = [
    "PACKAGES_PER_CHUNK",
    "ChunkTask",
    "EnvTask",
    "RestTask",
    "Task",
    "TaskResult",
    "account_chunk",
    "layout_tasks",
    "measure",
    "measure_cache",
    "measure_chunk",
    "measure_env",
    "measure_rest",
]

# Package dirs per cache chunk: an env change walks again each chunk holding a package it linked or
# unlinked, so chunks are small; each is one task of a full scan, so not so small that IPC dominates.
PACKAGES_PER_CHUNK = 16


@dataclass(frozen=True)
class EnvTask:
    env: EnvLocation


@dataclass(frozen=True)
class RestTask:
    """Root-only leftovers: ``ROOT/envs`` itself, stray files and non-env dirs in it."""

    root: str
    path: str
    exclude: frozenset[str]


@dataclass(frozen=True)
class ChunkTask:
    """Package dirs (entries) of one cache, and with ``include_top`` the cache dir itself, its channel
    and platform ``levels`` and their files (``all_package_dirs`` are then left out of that walk)."""

    root: str
    pkgs_dir: str
    package_dirs: tuple[str, ...]
    include_top: bool
    all_package_dirs: frozenset[str]
    levels: tuple[str, ...] = ()


Task = EnvTask | RestTask | ChunkTask
TaskResult = EnvUsage | TreeUsage | PkgsChunk


def measure_env(env: EnvLocation, options: ScanOptions) -> EnvUsage:
    """Walk and account one env (in the calling process)."""
    started = time.monotonic()
    meta = read_env_metadata(env.prefix)
    owned = ownership(meta, env.pkgs_dirs)
    with budgeted(options):
        walk = walk_tree(env.prefix, env.exclude, options.cross_filesystems, owned)
    walk.errors.extend(meta.errors)
    foreign = foreign_sources(meta, owned, env.prefix, env.pkgs_dirs)
    if foreign is not None:
        walk.errors.append(foreign)
    return EnvUsage(
        root=env.root,
        name=env.name,
        prefix=env.prefix,
        usage=account_tree(walk),
        scanned_at=time.time(),
        scan_seconds=time.monotonic() - started,
        contents=account_contents(walk, meta, owned, options.top_packages, env.pkgs_dirs),
    )


def account_chunk(raw: CacheChunkWalk) -> PkgsChunk:
    """The accounted form of one walked cache chunk."""
    usage = account_tree(raw.walk)
    path_ino = np.frombuffer(raw.walk.ino, dtype=np.uint64) if len(raw.walk.ino) else np.zeros(0, np.uint64)
    path_package = np.frombuffer(raw.path_package, dtype=np.uint32) if len(raw.path_package) else np.zeros(0, np.uint32)
    row_package, cleanable = package_rows(path_ino, path_package, raw.may_clean, usage.shared)
    return PkgsChunk(
        pkgs_dir=raw.pkgs_dir,
        usage=usage,
        packages=raw.packages,
        unreferenced_packages=raw.unreferenced_packages,
        unreferenced_bytes=raw.unreferenced_bytes,
        tarballs=raw.tarballs,
        tarball_bytes=raw.tarball_bytes,
        index_cache_bytes=raw.index_cache_bytes,
        leftover_bytes=raw.leftover_bytes,
        package_dirs=raw.package_dirs,
        include_top=raw.include_top,
        all_package_dirs=raw.all_package_dirs,
        levels=raw.levels,
        dir_private_bytes=raw.dir_private_bytes,
        cleanable=cleanable,
        row_package=row_package,
        # NO_PACKAGE (0xFFFFFFFF) read as int32 is -1: a file of the cache dir or of its levels
        extent_package=np.array(raw.extent_package, np.uint32).view(np.int32),
    )


def measure_chunk(task: ChunkTask, options: ScanOptions) -> PkgsChunk:
    """Walk and account one chunk of a package cache."""
    with budgeted(options):
        walked = walk_pkgs_chunk(
            task.pkgs_dir, list(task.package_dirs), task.include_top, task.all_package_dirs, options.cross_filesystems,
            levels=task.levels,
        )
    return account_chunk(walked)


def remeasure_chunk(chunk: PkgsChunk, options: ScanOptions) -> PkgsChunk:
    """Walk one chunk of a package cache again, as it was walked the first time."""
    return measure_chunk(
        ChunkTask("", chunk.pkgs_dir, chunk.package_dirs, chunk.include_top, chunk.all_package_dirs, chunk.levels),
        options,
    )


def _rest_task(layout: RootLayout) -> RestTask | None:
    if not layout.envs_container:
        return None
    env_prefixes = frozenset(e.prefix for e in layout.envs if e.prefix != layout.path)
    return RestTask(layout.path, layout.envs_container, env_prefixes)


def _measure_rest_task(task: RestTask, options: ScanOptions) -> TreeUsage:
    with budgeted(options):
        walked = walk_tree(task.path, task.exclude, options.cross_filesystems)
    return account_tree(walked)


def measure_rest(layout: RootLayout, options: ScanOptions) -> TreeUsage | None:
    """Walk what of ``layout`` is neither env nor cache: ``ROOT/envs`` minus the env prefixes."""
    task = _rest_task(layout)
    return _measure_rest_task(task, options) if task else None


def measure(task: Task, options: ScanOptions) -> TaskResult:
    """Run one task (the function worker processes are given)."""
    if isinstance(task, EnvTask):
        return measure_env(task.env, options)
    if isinstance(task, RestTask):
        return _measure_rest_task(task, options)
    return measure_chunk(task, options)


def _cache_tasks(root: str, pkgs_dir: str, listing_errors: list[WalkError]) -> list[ChunkTask]:
    listing = list_cache(pkgs_dir)
    listing_errors.extend(listing.errors)
    package_dirs = listing.entries
    chunks = [package_dirs[i : i + PACKAGES_PER_CHUNK] for i in range(0, len(package_dirs), PACKAGES_PER_CHUNK)]
    # The cache dir itself, its levels and their files (tarballs) are a chunk of their own: an env
    # change then walks again only the chunks of the packages it linked or unlinked. Only that chunk
    # needs every package dir (to leave them out): a copy per chunk, pickled both ways, cost tens of
    # MB on a cache of thousands of packages.
    tasks = [ChunkTask(root, pkgs_dir, (), True, frozenset(package_dirs), listing.levels)]
    tasks.extend(ChunkTask(root, pkgs_dir, tuple(c), False, frozenset()) for c in chunks)
    return tasks


def layout_tasks(layout: RootLayout, listing_errors: list[WalkError]) -> list[Task]:
    """Every task of a full scan of ``layout``: its caches' chunks, its envs, its leftover part.
    Errors listing a cache are added to ``listing_errors``."""
    tasks: list[Task] = []
    for pkgs_dir in layout.pkgs_dirs:
        tasks.extend(_cache_tasks(layout.path, pkgs_dir, listing_errors))
    tasks.extend(EnvTask(env) for env in layout.envs)
    rest = _rest_task(layout)
    if rest is not None:
        tasks.append(rest)
    return tasks


def measure_cache(root: str, pkgs_dir: str, options: ScanOptions) -> list[PkgsChunk]:
    """Walk and account one whole package cache in the calling process, chunk by chunk; errors listing
    it are kept in the first chunk's errors."""
    listing_errors: list[WalkError] = []
    chunks = [measure_chunk(t, options) for t in _cache_tasks(root, pkgs_dir, listing_errors)]
    if listing_errors:  # the top chunk is always there
        first = chunks[0]
        chunks[0] = replace(first, usage=replace(first.usage, errors=first.usage.errors + tuple(listing_errors)))
    return chunks
