"""Scan stage, the shape of a package cache: where its package dirs are, flat or hierarchical.

conda (and mamba before 2.6) extract every package directly into the cache,
``pkgs/<name>-<version>-<build>/`` with its archive beside it. mamba >= 2.6 (mamba-org/mamba#4163) puts
channel and platform *levels* in between, ``pkgs/<channel>/<platform>/<name>-<version>-<build>/``, where
``<channel>`` is one directory for a named channel (``conda-forge``) and several for a URL channel
(``https/repo.example.org/labs``); ``urls.txt`` and the index cache ``cache/`` stay at the top. A cache
upgraded in place holds both layouts. Nothing in the cache says which it is, so every directory below
it is classified by what it holds, without configuration:

* an *entry* is walked as one tree of a chunk and never descended for more package dirs: the top-level
  ``cache/`` (index cache); a directory holding ``info/`` (an extracted package); a directory beside its
  own archive (``<dir>.conda``, ``<dir>.tar.bz2`` or their ``.part``/``.partial`` forms), whatever it
  holds, since that is an extraction target, finished or not; a hidden directory (``.trash``); anything
  deeper than :data:`MAX_LEVEL_DEPTH`; and every directory that is not a level.
* a *level* (a channel or platform dir, descended) is a directory that, within :data:`MAX_LEVEL_DEPTH`
  levels of the cache, holds a finished package dir (one with ``info/index.json``) or an archive,
  directly or through directories holding no other file than the leftovers conda and mamba leave
  (``.partial``, ``.trash``, ``.c~``); or one holding no such other file at all, at any depth, whose name
  cannot be a package's (fewer than two ``-``: a package dir is ``name-version-build`` and neither
  version nor build may hold a ``-``, while ``conda-forge``, ``linux-64``, ``noarch``, ``https`` or a
  host name can): a channel or platform dir emptied by ``conda clean``.

Why: a half-extracted package has no ``info/index.json`` but does have payload files (``lib/x.so``,
``LICENSE``) somewhere in it, and a channel or platform dir never has any; that alone tells them apart
in a platform dir as at the top, and keeps an interrupted extraction counted as leftover. A directory
holding only directories (a package's ``lib/``, or a URL channel's ``https/``) is decided by what they
hold, so the probe goes down only through file-less directories and stops at the first payload file:
it does not walk payload trees, and the depth bound keeps a hostile tree from making the listing
explode. ``info/index.json``, not ``info/``, is the evidence, because packages ship ``share/info/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from exporter.model import WalkError
from exporter.scan.walk import error_kind

__all__ = [
    "ARCHIVE_SUFFIXES",
    "INDEX_CACHE_DIR",
    "LEFTOVER_SUFFIXES",
    "MAX_LEVEL_DEPTH",
    "TARBALL_SUFFIXES",
    "CacheListing",
    "list_cache",
]

# Downloaded repodata, what `conda clean --index-cache` removes; only at the top of a cache.
INDEX_CACHE_DIR = "cache"
# Files nothing will use: interrupted downloads and what conda's own clean-up calls temp files.
LEFTOVER_SUFFIXES = (".partial", ".trash", ".c~")
TARBALL_SUFFIXES = (".tar.bz2", ".conda", ".tar.bz2.part", ".conda.part")
# Names of a package's archive, finished or being downloaded: found only where package dirs are.
ARCHIVE_SUFFIXES = (*TARBALL_SUFFIXES, ".tar.bz2.partial", ".conda.partial")
MAX_LEVEL_DEPTH = 8
"""Channel and platform levels deeper below a cache than this are not looked for (a URL channel with a
path of five components and its platform is 7 deep)."""

_EVIDENCE, _PAYLOAD, _NEUTRAL = "evidence", "payload", "neutral"


@dataclass(frozen=True)
class CacheListing:
    """A package cache's ``entries`` (package dirs, the index cache, leftover dirs: each walked as a
    tree of its own) and ``levels`` (channel and platform dirs, walked with the cache dir itself), both
    sorted absolute paths; ``errors`` listing the cache dir."""

    entries: tuple[str, ...]
    levels: tuple[str, ...]
    errors: tuple[WalkError, ...] = ()


def _can_be_package_name(name: str) -> bool:
    return name.count("-") >= 2


def _holds(path: str, *rel: str, file: bool = False) -> bool:
    target = os.path.join(path, *rel)
    return os.path.isfile(target) if file else os.path.isdir(target)


def _listing(path: str) -> tuple[list[str], list[str]]:
    """(sub-directory names, other names) of ``path``; OSError when it cannot be listed."""
    dirs: list[str] = []
    others: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            (dirs if entry.is_dir(follow_symlinks=False) else others).append(entry.name)
    return dirs, others


def _scan(path: str) -> tuple[list[str], list[str]] | None:
    """:func:`_listing`, None when ``path`` cannot be listed."""
    try:
        return _listing(path)
    except OSError:
        return None


class _Prober:
    """Probes directories for level evidence (see the module doc), each at most once per listing."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def probe(self, path: str, depth: int) -> str:
        if path not in self._seen:
            self._seen[path] = self._probe(path, depth)
        return self._seen[path]

    def _probe(self, path: str, depth: int) -> str:
        listed = _scan(path) if depth <= MAX_LEVEL_DEPTH else None
        if listed is None:
            return _PAYLOAD  # unreadable or too deep: not a level; its walk reports why
        dirs, others = listed
        if any(name.endswith(ARCHIVE_SUFFIXES) for name in others):
            return _EVIDENCE
        if any(_holds(path, name, "info", "index.json", file=True) for name in dirs):
            return _EVIDENCE
        payload = any(not name.endswith(LEFTOVER_SUFFIXES) for name in others)
        if payload:
            return _PAYLOAD  # do not go down a package's payload tree
        for name in sorted(dirs):
            if name.startswith(".") or _holds(path, name, "info"):
                continue  # trash, or a package dir whose extraction never finished: neither way
            found = self.probe(os.path.join(path, name), depth + 1)
            if found == _EVIDENCE:
                return _EVIDENCE
            payload = payload or found == _PAYLOAD
        return _PAYLOAD if payload else _NEUTRAL

    def is_level(self, path: str, name: str, depth: int, siblings: frozenset[str]) -> bool:
        """Is ``path`` (named ``name``, ``depth`` below the cache, beside the non-directories
        ``siblings``) a channel or platform level?"""
        if depth > MAX_LEVEL_DEPTH or name.startswith(".") or _holds(path, "info"):
            return False
        if any(name + suffix in siblings for suffix in ARCHIVE_SUFFIXES):
            return False  # an extraction target beside its archive
        found = self.probe(path, depth)
        return found == _EVIDENCE or (found == _NEUTRAL and not _can_be_package_name(name))


def list_cache(pkgs_dir: str) -> CacheListing:
    """Entries and levels of the package cache ``pkgs_dir`` (see the module doc); symlinks are
    never followed."""
    try:
        top = _listing(pkgs_dir)
    except OSError as exc:
        return CacheListing((), (), (WalkError(error_kind(exc), pkgs_dir, exc.strerror or str(exc)),))
    prober = _Prober()
    entries: list[str] = []
    levels: list[str] = []
    pending = [(pkgs_dir, 0)]
    while pending:
        level, depth = pending.pop()
        listed = top if level == pkgs_dir else _scan(level)  # the top is listed once, above
        if listed is None:
            continue  # vanished or unreadable since: the walk of the cache reports it
        dirs, others = listed
        siblings = frozenset(others)
        for name in dirs:
            path = os.path.join(level, name)
            if depth == 0 and name == INDEX_CACHE_DIR:
                entries.append(path)
            elif prober.is_level(path, name, depth + 1, siblings):
                levels.append(path)
                pending.append((path, depth + 1))
            else:
                entries.append(path)
    return CacheListing(tuple(sorted(entries)), tuple(sorted(levels)))
