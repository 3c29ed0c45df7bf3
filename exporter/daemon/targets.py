"""Daemon, change targets: which directories to watch, what a change in each means, and how to see it.

Never a recursive watch (shared/FACTS.md: on a big root it costs ~100k watches and, with a wide
default mask, drowns in queue overflows). Per root we watch only where installers write on every
transaction: the root dir, ``envs/``, ``pkgs/``, each env's ``conda-meta/`` and
``lib/python*/site-packages`` (pip), plus each not-yet-env dir of ``envs/`` (to see ``conda-meta/``
appear). A hierarchical package cache (mamba >= 2.6) extracts into ``pkgs/<channel>/<platform>/``, not
``pkgs/``: its channel and platform dirs (:func:`exporter.scan.cachelayout.list_cache`; a few per
channel, at most :data:`MAX_LEVEL_WATCHES` per cache) are watched too, each change there meaning the
same cache target as one in ``pkgs/``. Each change maps to a :class:`Target`: an env to rescan, a
package cache to rescan, or a root to re-discover. The same map drives inotify
(:mod:`exporter.daemon.inotify`) and polling (:func:`fingerprints`), where inotify cannot work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Literal

from exporter.discover.roots import RootLayout
from exporter.scan.budget import NETWORK_FILESYSTEMS, mount_type
from exporter.scan.cachelayout import list_cache

__all__ = [
    "MAX_LEVEL_WATCHES",
    "NETWORK_FILESYSTEMS",
    "Fingerprint",
    "Target",
    "WatchSpec",
    "cache_levels",
    "filesystem_type",
    "fingerprints",
    "site_packages_dirs",
    "stamp",
    "top_stamps",
    "watch_specs",
]

MAX_LEVEL_WATCHES = 256
"""Channel/platform dirs of one cache watched at most (a hostile tree must not exhaust inotify
watches); changes beyond them are caught by the reconcile scan."""


@dataclass(frozen=True, order=True)
class Target:
    """Something to bring up to date: ``env`` (``path`` is its prefix), ``pkgs`` (a cache dir) or
    ``root`` (re-discover the root at ``path``: envs may have appeared or gone)."""

    kind: Literal["env", "pkgs", "root"]
    path: str
    root: str


Role = Literal["root", "envs", "candidate", "pkgs", "meta", "site"]


@dataclass(frozen=True)
class WatchSpec:
    """One watched directory, what it is in its root, and (for meta/site) the env ``prefix``; for a
    channel/platform dir of a hierarchical cache (role pkgs), ``cache`` is the cache dir it belongs to."""

    path: str
    role: Role
    root: str
    prefix: str = ""
    cache: str = ""

    def targets(self, name: str) -> list[Target]:
        """What a change of the entry ``name`` in this directory ("" for the directory itself) affects."""
        if self.role == "root":
            if name in ("envs", "pkgs", "conda-meta", ""):
                return [Target("root", self.root, self.root)]
            return [Target("env", self.root, self.root)]
        if self.role == "envs":
            found = [Target("root", self.root, self.root)]
            if name:
                found.append(Target("env", os.path.join(self.path, name), self.root))
            return found
        if self.role == "candidate":
            return [Target("root", self.root, self.root)]
        if self.role == "pkgs":
            return [Target("pkgs", self.cache or self.path, self.root)]
        return [Target("env", self.prefix, self.root)]


def site_packages_dirs(prefix: str) -> list[str]:
    """``PREFIX/lib/python*/site-packages`` directories that exist (symlinks excluded).

    Names are matched before anything is stat'ed: ``lib/`` of an env holds thousands of entries, and
    a glob would test each one for being a directory."""
    lib = os.path.join(prefix, "lib")
    try:
        names = [entry.name for entry in os.scandir(lib) if entry.name.startswith("python")]
    except OSError:
        return []
    found = (os.path.join(lib, name, "site-packages") for name in names)
    return sorted(p for p in found if os.path.isdir(p) and not os.path.islink(p))


def cache_levels(pkgs_dir: str) -> list[str]:
    """The channel and platform dirs of the package cache ``pkgs_dir`` (none for a flat cache)."""
    return list(list_cache(pkgs_dir).levels[:MAX_LEVEL_WATCHES])


def watch_specs(
    layouts: Iterable[RootLayout],
    site_dirs: Callable[[str], list[str]] = site_packages_dirs,
    levels: Callable[[str], list[str]] = cache_levels,
) -> dict[str, WatchSpec]:
    """Every directory to watch for ``layouts``, by path. ``site_dirs`` lists an env's site-packages
    directories, ``levels`` a cache's channel/platform dirs (the daemon passes memos of
    :func:`site_packages_dirs` and :func:`cache_levels`)."""
    specs: dict[str, WatchSpec] = {}

    def add(spec: WatchSpec) -> None:
        specs.setdefault(spec.path, spec)

    for layout in layouts:
        root = layout.path
        add(WatchSpec(root, "root", root))
        if layout.envs_container:
            add(WatchSpec(layout.envs_container, "envs", root))
        for pkgs_dir in layout.pkgs_dirs:
            add(WatchSpec(pkgs_dir, "pkgs", root))
            for level in levels(pkgs_dir):
                add(WatchSpec(level, "pkgs", root, cache=pkgs_dir))
        for ignored in layout.ignored_dirs:
            add(WatchSpec(ignored, "candidate", root))
        for env in layout.envs:
            add(WatchSpec(os.path.join(env.prefix, "conda-meta"), "meta", root, env.prefix))
            for site in site_dirs(env.prefix):
                add(WatchSpec(site, "site", root, env.prefix))
    return specs


def stamp(path: str) -> tuple[int, int]:
    """``(st_mtime_ns, st_ino)`` of ``path``, ``(0, 0)`` when it cannot be stat'ed."""
    try:
        st = os.lstat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)


Fingerprint = tuple[tuple[int, int], ...]
"""A target's ``(mtime_ns, ino)`` stamps, one per watched dir (see :func:`fingerprints`)."""


def top_stamps(prefix: str, skip: Container[str]) -> list[tuple[int, int]]:
    """``(mtime_ns, ino)`` of the env dir ``prefix`` and of each directory directly in it (not symlinks),
    by name, leaving out the paths in ``skip`` (watched for something else: a base env's ``envs/``,
    ``pkgs/``). A file added, removed or renamed directly in one of them changes its stamp; one deeper
    down (``share/doc/x``) does not. ``[]`` when ``prefix`` cannot be listed."""
    try:
        with os.scandir(prefix) as entries:
            dirs = sorted((e.name, e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.path not in skip)
    except OSError:
        return []
    return [stamp(prefix) if prefix not in skip else (0, 0), *(stamp(path) for _, path in dirs)]


def fingerprints(specs: Iterable[WatchSpec]) -> dict[Target, Fingerprint]:
    """Per target, ``(mtime_ns, ino)`` of its watched dirs, and for an env also of ``conda-meta/history``
    and of its top-level dirs (:func:`top_stamps`: what no watch sees). A changed fingerprint means the
    target changed. Cost: one ``lstat`` per watched dir and per top-level dir of an env (~5 µs each),
    and one listing of each env dir."""
    specs = sorted(specs, key=lambda s: s.path)
    watched = {spec.path for spec in specs if spec.role in ("root", "envs", "pkgs", "candidate")}
    stamps: dict[Target, list[tuple[int, int]]] = {}
    for spec in specs:
        here = stamp(spec.path)
        for target in spec.targets(""):
            stamps.setdefault(target, []).append(here)
        if spec.role == "meta":
            target = Target("env", spec.prefix, spec.root)
            stamps.setdefault(target, []).append(stamp(os.path.join(spec.path, "history")))
            stamps[target] += top_stamps(spec.prefix, watched)
    return {target: tuple(values) for target, values in stamps.items()}


filesystem_type = mount_type  # (where it was before the scan budget needed it too)
