"""Account an env's contents by conda's records: untracked files, copies, and what relinking saves.

Works on a walk made with the env's owned paths (``walk_tree(..., owned=...)``) and the env's
:class:`~exporter.condameta.EnvMetadata`. Deciding whether a single-link file is a copy costs one
``lstat`` of its cache entry; only owned single-link regular files are checked, which in an env
installed by hardlinks are few. Copies of a cache on another filesystem count as copied but not as
dedupable: hardlinks cannot cross filesystems.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from exporter.account import BLOCK_SIZE
from exporter.condameta import EnvMetadata, PackageRecord
from exporter.snapshot import EnvContents
from exporter.walk import TreeWalk

__all__ = ["account_contents"]


def _cache_entry(record: PackageRecord, pkgs_dirs: Sequence[str]) -> str | None:
    """The extracted package dir the record came from, if it still exists."""
    candidates = [record.source] if record.source else []
    candidates += [os.path.join(d, record.dist) for d in pkgs_dirs]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    return None


class _CacheFiles:
    """Answers "is ``rel`` a regular file of cache entry ``entry``, and on which device" with one
    ``scandir`` per cache directory instead of one ``lstat`` per file: most single-link files of an env
    (``.pyc`` compiled at install, files of deleted cache entries) are not in the cache at all, and a
    failed ``lstat`` costs a Python exception."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}
        self._devs: dict[str, int | None] = {}

    def _regular_names(self, directory: str) -> frozenset[str]:
        names = self._names.get(directory)
        if names is None:
            try:
                with os.scandir(directory) as entries:
                    names = frozenset(e.name for e in entries if e.is_file(follow_symlinks=False))
            except OSError:
                names = frozenset()
            self._names[directory] = names
        return names

    def device_of(self, entry: str, rel: str) -> int | None:
        """``st_dev`` of ``entry/rel`` if it is a regular file, else None."""
        directory, _, name = f"{entry}/{rel}".rpartition("/")
        if name not in self._regular_names(directory):
            return None
        if entry not in self._devs:
            try:
                self._devs[entry] = os.lstat(entry).st_dev
            except OSError:
                self._devs[entry] = None
        return self._devs[entry]


def _top_packages(walk: TreeWalk, meta: EnvMetadata, top: int) -> tuple[tuple[str, int], ...]:
    """The ``top`` packages by bytes of their paths in the env, as (name, bytes), biggest first."""
    by_name: dict[str, int] = {}
    for record, blocks in zip(meta.packages, walk.package_blocks, strict=False):
        by_name[record.name] = by_name.get(record.name, 0) + blocks * BLOCK_SIZE
    return tuple(sorted(by_name.items(), key=lambda item: (-item[1], item[0]))[:top])


def account_contents(
    walk: TreeWalk,
    meta: EnvMetadata,
    owned: Mapping[str, int],
    pkgs_dirs: Sequence[str],
    top_packages: int = 0,
) -> EnvContents:
    """Untracked/copied/dedupable bytes of one env (see :class:`~exporter.snapshot.EnvContents`), from
    a walk given ``owned`` (``meta.owned_paths()``) and, with ``top_packages``, the biggest packages."""
    entries: dict[str, str | None] = {}
    cache_files = _CacheFiles()
    copied_blocks = 0
    dedupable: dict[str, int] = {}
    for rel, blocks in walk.owned_single_links:
        record = meta.packages[owned[rel]]
        if rel in record.relocated:
            continue
        if record.dist not in entries:
            entries[record.dist] = _cache_entry(record, pkgs_dirs)
        entry = entries[record.dist]
        cached_dev = cache_files.device_of(entry, rel) if entry is not None else None
        if record.link_type == "copy" or cached_dev is not None:
            copied_blocks += blocks
        # a hardlink cannot cross filesystems: a copy of a cache on another one is not dedupable
        if cached_dev == walk.dev and entry is not None:
            cache = os.path.dirname(entry)
            dedupable[cache] = dedupable.get(cache, 0) + blocks * BLOCK_SIZE
    return EnvContents(
        packages=len(meta.packages),
        untracked_bytes=walk.untracked_blocks * BLOCK_SIZE,
        untracked_files=walk.untracked_files,
        copied_bytes=copied_blocks * BLOCK_SIZE,
        dedupable=tuple(sorted(dedupable.items())),
        owner=meta.owner,
        python_version=meta.python_version,
        last_transaction=meta.last_transaction,
        top_packages=_top_packages(walk, meta, top_packages) if top_packages else (),
        sources=None if meta.errors or any(r.source is None for r in meta.packages)
        else tuple(sorted({os.path.normpath(r.source) for r in meta.packages if r.source})),
    )
