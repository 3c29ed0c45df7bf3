"""Account stage, contents: untracked files, copies, and what relinking saves, by conda's own records.

:func:`ownership` turns an env's :class:`~exporter.scan.records.EnvMetadata` into what the walk needs
(which package owns which path, and the cache entry each package came from); the walk then sorts
every single-link file a package installed by whether that cache entry still holds it (one ``lstat``
each, done by the walker), and :func:`account_contents` turns its per-package sums into the env's
numbers. Copies of a cache on another filesystem count as copied but not as dedupable: hardlinks
cannot cross filesystems.

A package's cache entry is where its record says (``link.source``, else ``extracted_package_dir``),
else ``<cache>/<name>-<version>-<build>`` (conda's flat cache), else where a mamba >= 2.6 cache puts it,
``<cache>/<channel>/<subdir>/<dist>`` with the channel from the archive's URL or the record's
``channel``. Dedupable bytes are keyed by the cache holding the entry, at whatever depth.

Records are written by the env's owner, and the walker looks into a package's cache entry for every file
it installed: a record naming any directory would let an env owner learn, through the copied bytes,
which files exist where they cannot look. So a path a record yields is accepted as a cache entry only
when, normalised (without resolving symlinks), it is a package dir of one of the env's known caches as
:mod:`exporter.scan.cachelayout` lists them: below the cache through at most ``MAX_LEVEL_DEPTH``
channel/platform levels, every component a real directory (no symlink), no hidden one, the levels not
packages themselves, and the dir itself holding ``info/``. This is checked per candidate with a few
``lstat()`` calls rather than by listing each cache for each env (5 ms per thousand packages, per env).
A package whose record's own source lies outside every known cache and which has no entry in one by its
name either is treated as having no cache entry, and counted once per env (:func:`foreign_sources`, a
``metadata`` error and so a log line).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence

from exporter.model import BLOCK_SIZE, METADATA_DIR, EnvContents, WalkError
from exporter.scan.cachelayout import INDEX_CACHE_DIR, MAX_LEVEL_DEPTH
from exporter.scan.records import EnvMetadata, PackageRecord
from exporter.scan.walk import Ownership, TreeWalk

__all__ = ["account_contents", "foreign_sources", "ownership"]


def _components(path: str) -> list[str]:
    """The names of a URL's path, without empty, ``.`` or ``..`` ones (a record must not lead out)."""
    return [part for part in path.split("/") if part not in ("", ".", "..")]


def _hierarchical(record: PackageRecord, pkgs_dir: str) -> list[str]:
    """Where a hierarchical cache (mamba >= 2.6) at ``pkgs_dir`` would hold the record's package."""
    found: list[str] = []
    if record.url and "://" in record.url:
        scheme, _, rest = record.url.partition("://")
        parts = _components(rest)[:-1]  # host, channel path..., subdir (the archive's name dropped)
        if parts:
            found.append(os.path.join(pkgs_dir, *_components(scheme), *parts, record.dist))
            found.append(os.path.join(pkgs_dir, *parts[1:], record.dist))  # a channel named on its host
    if record.channel and record.subdir:
        scheme, sep, rest = record.channel.rpartition("://")
        channel = [*_components(scheme), *_components(rest)] if sep else _components(rest)
        found.append(os.path.join(pkgs_dir, *channel, *_components(record.subdir), record.dist))
    return found


def _real_dir(path: str) -> bool:
    """Is ``path`` a directory, itself not a symlink?"""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


class _KnownEntries:
    """Tells whether a path is a package dir of one of ``pkgs_dirs`` (see the module doc); memoises the
    levels it looked at."""

    def __init__(self, pkgs_dirs: Sequence[str]) -> None:
        # the deepest cache first: a cache nested in another's tree owns what is below it
        self._caches = sorted({os.path.normpath(d) for d in pkgs_dirs}, key=len, reverse=True)
        self._levels: dict[str, bool] = {}

    def place(self, path: str) -> tuple[str, list[str]] | None:
        """(cache, names below it) of ``path`` normalised, when it lies where a cache's listing may show a
        package dir (no hidden name, not too deep); None elsewhere."""
        path = os.path.normpath(path)
        if not os.path.isabs(path):
            return None
        for cache in self._caches:
            inside = cache.rstrip(os.sep) + os.sep
            if path.startswith(inside):
                names = path[len(inside) :].split(os.sep)
                if len(names) > MAX_LEVEL_DEPTH + 1 or any(n.startswith(".") for n in names):
                    return None
                return cache, names
        return None

    def accept(self, path: str) -> str | None:
        """``path`` normalised if it is a package dir of a known cache, else None."""
        placed = self.place(path)
        if placed is None:
            return None
        cache, names = placed
        if names == [INDEX_CACHE_DIR]:
            return None
        current = cache
        for name in names[:-1]:
            current = os.path.join(current, name)
            if not self._is_level(current, cache):
                return None
        entry = os.path.join(current, names[-1])
        return entry if _real_dir(entry) and _real_dir(os.path.join(entry, "info")) else None

    def _is_level(self, path: str, cache: str) -> bool:
        if path not in self._levels:
            self._levels[path] = (
                path != os.path.join(cache, INDEX_CACHE_DIR)
                and _real_dir(path)
                and not os.path.isdir(os.path.join(path, "info"))
            )
        return self._levels[path]


def _candidates(record: PackageRecord, pkgs_dirs: Sequence[str]) -> Iterator[str]:
    if record.source:
        yield record.source
    yield from (os.path.join(d, record.dist) for d in pkgs_dirs)
    yield from (c for d in pkgs_dirs for c in _hierarchical(record, d))


def _cache_entry(record: PackageRecord, pkgs_dirs: Sequence[str], known: _KnownEntries) -> str | None:
    """The extracted package dir the record came from, if it still exists in a known cache."""
    return next((e for e in map(known.accept, _candidates(record, pkgs_dirs)) if e is not None), None)


def _cache_of(entry: str, pkgs_dirs: Sequence[str]) -> str:
    """The package cache holding the cache entry ``entry``: the deepest of ``pkgs_dirs`` above it,
    else (a cache no layout lists) the entry's parent."""
    above = [d for d in pkgs_dirs if entry.startswith(d.rstrip(os.sep) + os.sep)]
    return max(above, key=len) if above else os.path.dirname(entry)


def ownership(meta: EnvMetadata, pkgs_dirs: Sequence[str]) -> Ownership:
    """The walk's view of ``meta``: files, relocated paths and cache entry of each package, in order (a
    package dir of one of ``pkgs_dirs``, or None)."""
    known = _KnownEntries(pkgs_dirs)
    return Ownership(
        files=[record.files for record in meta.packages],
        relocated=[record.relocated for record in meta.packages],
        cache_entries=[_cache_entry(record, pkgs_dirs, known) for record in meta.packages],
    )


def foreign_sources(meta: EnvMetadata, owned: Ownership, prefix: str, pkgs_dirs: Sequence[str]) -> WalkError | None:
    """One ``metadata`` error for the env at ``prefix`` when records name a source (``link.source`` or
    ``extracted_package_dir``) outside every known cache's package dirs and their package has no cache
    entry in ``owned`` (``ownership(meta, pkgs_dirs)``) either, else None. Decided from the path and the
    known caches alone, so that the count tells nothing of what exists where the record points."""
    known = _KnownEntries(pkgs_dirs)
    foreign = [
        r.source
        for r, entry in zip(meta.packages, owned.cache_entries, strict=True)
        if r.source and entry is None and known.place(r.source) is None
    ]
    if not foreign:
        return None
    return WalkError(
        "metadata",
        os.path.join(prefix, METADATA_DIR),
        f"{len(foreign)} package record(s) name a cache entry outside the known package caches "
        f"(first: {foreign[0]!r}); their copies are not looked for there",
    )


def _top_packages(walk: TreeWalk, meta: EnvMetadata, top: int) -> tuple[tuple[str, int], ...]:
    """The ``top`` packages by bytes of their paths in the env, as (name, bytes), biggest first."""
    by_name: dict[str, int] = {}
    for record, blocks in zip(meta.packages, walk.package_blocks, strict=False):
        by_name[record.name] = by_name.get(record.name, 0) + blocks * BLOCK_SIZE
    return tuple(sorted(by_name.items(), key=lambda item: (-item[1], item[0]))[:top])


def _device(path: str) -> int | None:
    try:
        return os.lstat(path).st_dev
    except OSError:
        return None


def account_contents(
    walk: TreeWalk, meta: EnvMetadata, owned: Ownership, top_packages: int = 0, pkgs_dirs: Sequence[str] = ()
) -> EnvContents:
    """Untracked/copied/dedupable bytes of one env (see :class:`~exporter.model.EnvContents`), from
    a walk given ``owned`` (``ownership(meta, pkgs_dirs)``) and, with ``top_packages``, the biggest packages.

    A single-link file a package installed is a copy when its cache entry holds the same path, or
    when conda says the package was installed by copying; relinking it to the cache would save its
    bytes only when the cache is on the env's filesystem.
    """
    copied_blocks = 0
    dedupable: dict[str, int] = {}
    # a walk that could not open the env at all has no per-package sums (empty lists): nothing to add
    per_package = zip(
        meta.packages, owned.cache_entries, walk.cached_single_blocks, walk.uncached_single_blocks, strict=False
    )
    for record, entry, cached, uncached in per_package:
        copied_blocks += cached + (uncached if record.link_type == "copy" else 0)
        if cached and entry is not None and _device(entry) == walk.dev:
            cache = _cache_of(entry, pkgs_dirs)
            dedupable[cache] = dedupable.get(cache, 0) + cached * BLOCK_SIZE
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
