"""Scan stage, package caches (``pkgs/``): sizes, tarballs, and what ``conda clean`` would free.

Rules follow conda's own ``conda clean`` (``conda/cli/main_clean.py``):

* ``--packages``: a directory holding ``info/`` is an extracted package; it is *unreferenced* (linked
  into no env) when none of its files has ``st_nlink > 1``. conda sums ``st_size``; we report allocated
  bytes like every other ``_bytes`` metric here.
* ``--tarballs``: files ending in ``.tar.bz2``, ``.conda`` or their ``.part`` forms whose
  ``st_nlink == 1``.

Package dirs and their archives sit at the top of a conda cache, and in channel/platform *levels* of a
mamba >= 2.6 one (``pkgs/<channel>/<platform>/``); :mod:`exporter.scan.cachelayout` says which
directories are levels and which are *entries* (package dirs, the top-level index cache ``cache/``,
leftover dirs). Both count the same way wherever they are: archives and leftover files in the cache
dir or in a level, and entries.

A big cache is scanned in chunks of entries so that worker processes share the work, and so that a
change walks again only the chunks holding the packages it touched. The cache directory itself, its
levels and the files in them (tarballs) are a chunk of their own.
"""

from __future__ import annotations

import os
import stat
from array import array
from dataclasses import dataclass, field

from exporter.model import BLOCK_SIZE, WalkError
from exporter.scan.cachelayout import INDEX_CACHE_DIR, LEFTOVER_SUFFIXES, TARBALL_SUFFIXES
from exporter.scan.walk import TreeWalk, error_kind, walk_tree

__all__ = ["NO_PACKAGE", "CacheChunkWalk", "walk_pkgs_chunk"]

NO_PACKAGE = 0xFFFFFFFF
"""``path_package`` of a path that lies in no package dir (the cache dir's and its levels' own files)."""


@dataclass
class CacheChunkWalk:
    """The raw result of walking one chunk of a package cache: the merged walk of its package dirs
    (and, with ``include_top``, of the cache dir itself, its ``levels`` and their files), and what conda's
    clean rules count in it. Byte counts are allocated bytes; :func:`exporter.account.trees.account_chunk`
    turns it into a :class:`~exporter.model.PkgsChunk`."""

    pkgs_dir: str
    walk: TreeWalk
    packages: int
    unreferenced_packages: int
    unreferenced_bytes: int
    tarballs: int
    tarball_bytes: int
    index_cache_bytes: int
    leftover_bytes: int
    # What was walked, so that this chunk alone can be walked again.
    package_dirs: tuple[str, ...]
    include_top: bool
    all_package_dirs: frozenset[str]
    levels: tuple[str, ...] = ()
    # Per entry of package_dirs: allocated bytes of its directories and single-link files, and whether
    # conda clean may remove it once no file of it has a second link (a package dir, read fully).
    dir_private_bytes: tuple[int, ...] = ()
    may_clean: tuple[bool, ...] = ()
    # Per hardlinked path of ``walk`` (its ino column): the index in package_dirs of the dir holding
    # it, or NO_PACKAGE for the files of the cache dir and its levels.
    path_package: array[int] = field(default_factory=lambda: array("I"))
    # Per shared extent row of ``walk`` (filesystems that reflink): the same, for the file holding it.
    extent_package: array[int] = field(default_factory=lambda: array("I"))


def _count_tarballs(directory: str, errors: list[WalkError]) -> tuple[int, int, int]:
    """Tarballs ``conda clean --tarballs`` removes (count, bytes) in ``directory`` (a cache dir or a
    level of one), and bytes of its leftover files (interrupted downloads, ``.trash``, ``.c~``)."""
    count = 0
    blocks = 0
    leftover_blocks = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(LEFTOVER_SUFFIXES) and entry.is_file(follow_symlinks=False):
                    try:
                        leftover_blocks += entry.stat(follow_symlinks=False).st_blocks
                    except OSError as exc:
                        errors.append(WalkError(error_kind(exc), entry.path, exc.strerror or str(exc)))
                    continue
                if not entry.name.endswith(TARBALL_SUFFIXES):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    errors.append(WalkError(error_kind(exc), entry.path, exc.strerror or str(exc)))
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    count += 1
                    blocks += st.st_blocks
    except OSError:
        pass  # the walk of the cache directory itself reports why it cannot be read
    return count, blocks * BLOCK_SIZE, leftover_blocks * BLOCK_SIZE


def walk_pkgs_chunk(
    pkgs_dir: str,
    package_dirs: list[str],
    include_top: bool,
    all_package_dirs: frozenset[str] = frozenset(),
    cross_filesystems: bool = False,
    *,
    levels: tuple[str, ...] = (),
) -> CacheChunkWalk:
    """Walk ``package_dirs`` (entries of ``pkgs_dir``, see :mod:`exporter.scan.cachelayout`) and, with
    ``include_top``, the cache directory itself, its ``levels`` and their files (``all_package_dirs``,
    every entry, are then left out of that walk)."""
    merged = TreeWalk(path=pkgs_dir)
    extra_errors: list[WalkError] = []
    tarballs = tarball_bytes = leftover_files_bytes = 0
    if include_top:
        top = walk_tree(pkgs_dir, exclude=all_package_dirs, cross_filesystems=cross_filesystems, map_hardlinked=True)
        merged.dev = top.dev
        merged.merge(top)
        for directory in (pkgs_dir, *levels):
            counted = _count_tarballs(directory, extra_errors)
            tarballs += counted[0]
            tarball_bytes += counted[1]
            leftover_files_bytes += counted[2]
    packages = unreferenced = unreferenced_blocks = index_cache_blocks = leftover_blocks = 0
    path_package = array("I", [NO_PACKAGE]) * len(merged.ino)
    extent_package = array("I", [NO_PACKAGE]) * len(merged.extent_start)
    dir_private: list[int] = []
    may_clean: list[bool] = []
    index_cache = os.path.join(pkgs_dir, INDEX_CACHE_DIR)
    for index, package_dir in enumerate(package_dirs):
        walk = walk_tree(package_dir, cross_filesystems=cross_filesystems, map_hardlinked=True)
        path_package.extend(array("I", [index]) * len(walk.ino))
        extent_package.extend(array("I", [index]) * len(walk.extent_start))
        dir_private.append(walk.private_blocks * BLOCK_SIZE)
        if not merged.dev:
            merged.dev = walk.dev
        if package_dir == index_cache:
            index_cache_blocks += walk.private_blocks  # repodata JSON: single-link files
        if package_dir != index_cache and not os.path.isfile(
            os.path.join(package_dir, "info", "index.json")
        ):
            # an extraction that never finished (or a .trash dir): nothing can use it
            leftover_blocks += walk.private_blocks + sum(walk.blocks)
        is_package = os.path.isdir(os.path.join(package_dir, "info")) and not os.path.islink(package_dir)
        may_clean.append(is_package and not walk.errors)
        if is_package:
            packages += 1
            # conda's rule: no file with st_nlink > 1. A package we could not read fully is not
            # declared unreferenced: conda would fail on it too.
            if walk.hardlinked_files == 0 and not walk.errors:
                unreferenced += 1
                unreferenced_blocks += walk.private_blocks
        merged.merge(walk)
    merged.errors.extend(extra_errors)
    return CacheChunkWalk(
        pkgs_dir=pkgs_dir,
        walk=merged,
        packages=packages,
        unreferenced_packages=unreferenced,
        unreferenced_bytes=unreferenced_blocks * BLOCK_SIZE,
        tarballs=tarballs,
        tarball_bytes=tarball_bytes,
        index_cache_bytes=index_cache_blocks * BLOCK_SIZE,
        leftover_bytes=leftover_blocks * BLOCK_SIZE + (leftover_files_bytes if include_top else 0),
        package_dirs=tuple(package_dirs),
        include_top=include_top,
        all_package_dirs=all_package_dirs,
        levels=tuple(levels) if include_top else (),
        dir_private_bytes=tuple(dir_private),
        may_clean=tuple(may_clean),
        path_package=path_package,
        extent_package=extent_package,
    )
