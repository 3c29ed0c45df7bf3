"""Discover step: find conda roots and lay out what in them is an env, a package cache, or neither.

A *root* is a conda installation directory. The root itself is the ``base`` env (when it has
``conda-meta/``), ``ROOT/envs/<name>/`` are named envs (a directory there without ``conda-meta/`` is
*ignored* and reported, never counted as an env) and ``ROOT/pkgs/`` is the package cache.
Discovery only lists directories; it reads no file contents and never follows symlinks.

What discovery leaves out, and why, is kept in :data:`SKIPPED` (one reason of :data:`SKIP_REASONS` per
path, as of each root's latest discovery): each path is logged once when it starts being skipped (not at
every rediscovery), and ``conda_exporter_skipped_dirs{reason}`` counts them.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.discover.condarc import CondaDirs, read_conda_dirs
from exporter.discover.smallfile import UnsafeFileError, read_small_file
from exporter.model import METADATA_DIR

__all__ = [
    "SKIPPED",
    "SKIP_REASONS",
    "Discovery",
    "EnvLocation",
    "RootLayout",
    "RootNotFoundError",
    "SkippedDirs",
    "detect_roots",
    "discover_external",
    "discover_root",
    "environments_txt_prefixes",
    "label_value",
]

log = logging.getLogger(__name__)

BASE_ENV_NAME = "base"
# Where installers put a root when nobody says otherwise, relative to $HOME, then absolute.
HOME_CANDIDATES = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba")
PIXI_ENVS = os.path.join(".pixi", "envs")
SYSTEM_CANDIDATES = ("/opt/conda", "/opt/miniconda3", "/opt/miniforge3", "/opt/anaconda3")


SKIP_REASONS: dict[str, tuple[int, str]] = {
    "no_conda_meta": (logging.INFO, "a directory in an envs dir without conda-meta/ is not an environment"),
    "permission": (logging.WARNING, "permission denied: whether it is an environment cannot be told, it is not "
                                    "counted as one"),
    "symlink": (logging.WARNING, "a symlink to a directory: discovery never follows symlinks, what it points to is "
                                 "not scanned (give the target itself as a root or --env)"),
    "unreadable": (logging.WARNING, "it cannot be read (not a permission problem: an I/O or filesystem error)"),
    "missing": (logging.INFO, "no such directory, or it has no conda-meta/ (a stale --env or environments.txt "
                              "entry)"),
}
"""Why a directory was left out (the ``reason`` label: a closed set), with the level and text of its log line."""


class SkippedDirs:
    """What discovery left out and why, per root (``""``: the envs given one by one), as of the root's latest
    discovery. Safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_root: dict[str, dict[str, str]] = {}

    def note(self, root: str, skipped: Mapping[str, str]) -> None:
        """Record ``skipped`` (path -> reason) as what ``root``'s discovery left out now; log each path whose
        reason is new (a path stays quiet while it stays skipped for the same reason)."""
        with self._lock:
            before = self._by_root.get(root, {})
            self._by_root[root] = dict(skipped)
        for path, reason in sorted(skipped.items()):
            if before.get(path) != reason:
                level, why = SKIP_REASONS[reason]
                log.log(level, "skipping %r: %s", path, why)

    def counts(self, roots: Iterable[str]) -> Counter[str]:
        """Directories skipped in ``roots`` now, by reason."""
        with self._lock:
            return Counter(reason for root in roots for reason in self._by_root.get(root, {}).values())


SKIPPED = SkippedDirs()
"""The process's record of skipped directories (discovery runs in the daemon thread and in ``--once``)."""


def _dir_reason(path: str) -> str | None:
    """None when ``path`` is a directory (lstat: a symlink is not), else why it is skipped."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission"
        return "missing" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else "unreadable"
    if stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode) and os.path.isdir(path):
        return "symlink"
    return "missing"


class RootNotFoundError(Exception):
    """A root that was asked for does not exist or does not look like a conda installation."""


@dataclass(frozen=True)
class EnvLocation:
    """One environment: ``name`` is ``base`` for the root env, else the directory name under ``envs/``."""

    root: str
    name: str
    prefix: str
    # Absolute directory paths left out of this env's walk (the base env's envs/ and pkgs/).
    exclude: frozenset[str] = frozenset()
    # Package caches the env's packages may have come from (to tell copies from conda's records).
    pkgs_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RootLayout:
    """What one root holds. ``envs_container`` is ``ROOT/envs`` when it exists."""

    path: str
    envs: tuple[EnvLocation, ...]
    pkgs_dirs: tuple[str, ...]
    envs_container: str | None
    ignored_dirs: tuple[str, ...]


def label_value(name: str) -> str:
    """Make a file name safe for a label value: valid UTF-8, undecodable bytes shown as ``\\xNN`` and a
    backslash doubled, so the mapping is reversible (two names never share a label: ``a\\xff`` typed
    out and ``a`` followed by the byte 0xFF give ``a\\\\xff`` and ``a\\xff``).

    File names come in as ``str`` with undecodable bytes as surrogates (``os.fsdecode``); the exposition
    format then escapes quotes, backslashes and newlines once more on the wire.
    """
    return name.replace("\\", "\\\\").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def looks_like_root(path: str) -> bool:
    """True when ``path`` holds any of ``conda-meta/``, ``envs/`` or ``pkgs/`` (a micromamba root may
    have no base env)."""
    return any(_is_dir(os.path.join(path, part)) for part in ("conda-meta", "envs", "pkgs", PIXI_ENVS))


def _root_of_prefix(prefix: str) -> str:
    """The root an activated prefix belongs to: ``R/envs/x`` -> ``R``, a base prefix -> itself."""
    parent = os.path.dirname(prefix.rstrip("/"))
    if os.path.basename(parent) == "envs":
        return os.path.dirname(parent)
    return prefix


def detect_roots(environ: Mapping[str, str], home: str | None) -> list[str]:
    """Auto-detect roots: ``$CONDA_ROOT``, ``$CONDA_PREFIX``, ``$MAMBA_ROOT_PREFIX``, ``$CONDA_EXE``,
    then the usual install locations. Returns existing, de-duplicated absolute paths, in that order."""
    candidates: list[str] = []
    if environ.get("CONDA_ROOT"):
        candidates.append(environ["CONDA_ROOT"])
    if environ.get("CONDA_PREFIX"):
        candidates.append(_root_of_prefix(environ["CONDA_PREFIX"]))
    if environ.get("MAMBA_ROOT_PREFIX"):
        candidates.append(environ["MAMBA_ROOT_PREFIX"])
    if environ.get("CONDA_EXE"):  # ROOT/bin/conda or ROOT/condabin/conda
        candidates.append(os.path.dirname(os.path.dirname(environ["CONDA_EXE"])))
    if home:
        candidates.extend(os.path.join(home, name) for name in HOME_CANDIDATES)
    candidates.extend(SYSTEM_CANDIDATES)
    return _unique_existing_roots(candidates)


def _unique_existing_roots(candidates: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    roots: list[str] = []
    for candidate in candidates:
        path = os.path.realpath(candidate)
        if path in seen or not looks_like_root(path):
            continue
        seen.add(path)
        roots.append(path)
    return roots


def validate_roots(paths: Iterable[str | Path]) -> list[str]:
    """Resolve roots that were asked for explicitly; raise :class:`RootNotFoundError` for a bad one."""
    roots: list[str] = []
    for given in paths:
        path = os.path.realpath(os.fspath(given))
        if not os.path.isdir(path):
            raise RootNotFoundError(f"conda root {os.fspath(given)!r} does not exist or is not a directory")
        if not looks_like_root(path):
            raise RootNotFoundError(
                f"{os.fspath(given)!r} is not a conda root: it has none of conda-meta/, envs/, pkgs/, .pixi/envs/"
            )
        if path not in roots:
            roots.append(path)
    return roots


def _list_envs(
    container: str, root: str, pkgs_dirs: tuple[str, ...], skipped: dict[str, str]
) -> tuple[list[EnvLocation], list[str]]:
    """Envs (dirs with conda-meta/) and ignored dirs directly inside ``container``; what is left out and
    why goes into ``skipped``."""
    envs: list[EnvLocation] = []
    ignored: list[str] = []
    try:
        with os.scandir(container) as entries:
            children = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        skipped[container] = "permission" if exc.errno in (errno.EACCES, errno.EPERM) else "unreadable"
        return envs, ignored
    for entry in children:
        prefix = os.path.join(container, entry.name)
        if not entry.is_dir(follow_symlinks=False):
            if entry.is_symlink() and os.path.isdir(prefix):
                skipped[prefix] = "symlink"
            continue  # stray files are counted by the root total only
        reason = _dir_reason(os.path.join(prefix, METADATA_DIR))
        if reason is None:
            envs.append(EnvLocation(root=root, name=entry.name, prefix=prefix, pkgs_dirs=pkgs_dirs))
            continue
        ignored.append(prefix)
        skipped[prefix] = "no_conda_meta" if reason in ("missing", "symlink") else reason
    return envs, ignored


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")


def discover_root(
    root: str, environ: Mapping[str, str] | None = None, home: str | None = None
) -> RootLayout:
    """List the envs and package caches of ``root`` (an absolute, resolved path).

    Besides ``ROOT/envs`` and ``ROOT/pkgs`` this takes the ``envs_dirs`` and ``pkgs_dirs`` that conda's
    configuration names (``.condarc`` files, ``CONDA_ENVS_PATH``, ``CONDA_PKGS_DIRS``; read from
    ``environ`` and ``home``, by default the process's), and a pixi project's ``.pixi/envs`` with the
    rattler package cache. A prefix met twice (say ``envs_dirs`` naming ``ROOT/envs``) counts once.
    """
    environ = os.environ if environ is None else environ
    home = environ.get("HOME") if home is None else home
    configured = read_conda_dirs(root, home, environ)
    envs_container = os.path.join(root, "envs")
    if not _is_dir(envs_container) and _is_dir(os.path.join(root, PIXI_ENVS)):
        envs_container = os.path.join(root, PIXI_ENVS)
        configured = CondaDirs(configured.envs_dirs, (*configured.pkgs_dirs, *_rattler_cache(home)))
    has_envs = _is_dir(envs_container)
    skipped: dict[str, str] = {}
    for path in (envs_container, os.path.join(root, "pkgs"), *configured.envs_dirs, *configured.pkgs_dirs):
        reason = _dir_reason(path)
        if reason is not None and reason != "missing":  # a missing optional dir is no news
            skipped[path] = reason
    pkgs_dirs = tuple(
        dict.fromkeys(os.path.realpath(p) for p in (os.path.join(root, "pkgs"), *configured.pkgs_dirs) if _is_dir(p))
    )

    envs: list[EnvLocation] = []
    ignored: list[str] = []
    containers = [envs_container] if has_envs else []
    containers += [os.path.realpath(d) for d in configured.envs_dirs if _is_dir(d)]
    for container in dict.fromkeys(containers):
        found, left_out = _list_envs(container, root, pkgs_dirs, skipped)
        envs += found
        ignored += left_out
    SKIPPED.note(root, skipped)
    envs = list({os.path.realpath(e.prefix): e for e in envs}.values())

    if _is_dir(os.path.join(root, METADATA_DIR)):
        nested = [p for p in (*containers, *pkgs_dirs) if _inside(p, root)]
        nested += [e.prefix for e in envs if _inside(e.prefix, root)]
        base = EnvLocation(root=root, name=BASE_ENV_NAME, prefix=root, exclude=frozenset(nested), pkgs_dirs=pkgs_dirs)
        envs.insert(0, base)

    return RootLayout(
        path=root,
        envs=tuple(envs),
        pkgs_dirs=pkgs_dirs,
        envs_container=envs_container if has_envs else None,
        ignored_dirs=tuple(ignored),
    )


def _rattler_cache(home: str | None) -> tuple[str, ...]:
    """pixi's package cache (rattler's), when this user has one."""
    if not home:
        return ()
    cache = os.path.join(home, ".cache", "rattler", "cache", "pkgs")
    return (cache,) if _is_dir(cache) else ()


# environments.txt lists one prefix a line: 1 MiB is thousands of envs, far past any real user's file.
MAX_ENVIRONMENTS_TXT_BYTES = 1 << 20


def environments_txt_prefixes(users: Iterable[tuple[str, int]] | None = None) -> list[str]:
    """Prefixes listed in ``~/.conda/environments.txt`` of every user of the machine (conda records
    there each env it creates); ``users``: (home, uid) pairs, by default every account of ``pwd``.

    The file is its user's to write, so it is read only if it is a regular file (no FIFO, device or symlink)
    of at most :data:`MAX_ENVIRONMENTS_TXT_BYTES` owned by that user (a hardlink to a file they may not
    read would otherwise have its lines logged as missing envs); others are skipped with a warning.
    Missing or unreadable files are skipped quietly; stale entries are left to the caller.
    """
    if users is None:
        users = [(user.pw_dir, user.pw_uid) for user in pwd.getpwall()]
    prefixes: list[str] = []
    for home, uid in users:
        path = os.path.join(home, ".conda", "environments.txt")
        try:
            data = read_small_file(path, MAX_ENVIRONMENTS_TXT_BYTES, owner=uid, follow_symlinks=False)
        except UnsafeFileError as exc:
            log.warning("skipping %s", exc)
            continue
        except OSError:
            continue
        lines = data.decode("utf-8", errors="surrogateescape").splitlines()
        prefixes += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return prefixes


def discover_external(prefixes: Iterable[str], known: Iterable[RootLayout]) -> RootLayout | None:
    """Envs given one by one (``--env``, ``environments.txt``) that no root already holds, as a layout
    whose ``path`` is ``""`` (its envs get the ``root=""`` label). Missing or non-env prefixes are
    logged and skipped. ``None`` when nothing is left."""
    seen = {os.path.realpath(e.prefix) for layout in known for e in layout.envs}
    pkgs_dirs = tuple(dict.fromkeys(d for layout in known for d in layout.pkgs_dirs))
    envs: list[EnvLocation] = []
    skipped: dict[str, str] = {}
    for given in prefixes:
        prefix = os.path.realpath(given)  # given one by one: a symlink to an env is followed on purpose
        if prefix in seen:
            continue
        seen.add(prefix)
        reason = _dir_reason(os.path.join(prefix, METADATA_DIR))
        if reason is not None:
            skipped[given] = "missing" if reason == "symlink" else reason
            continue
        envs.append(EnvLocation(root="", name=os.path.basename(prefix), prefix=prefix, pkgs_dirs=pkgs_dirs))
    SKIPPED.note("", skipped)
    if not envs:
        return None
    return RootLayout(path="", envs=tuple(envs), pkgs_dirs=(), envs_container=None, ignored_dirs=())


@dataclass(frozen=True)
class Discovery:
    """Everything discovery was told: roots, single envs, and whether to read environments.txt."""

    roots: tuple[str, ...]
    extra_envs: tuple[str, ...] = ()
    environments_txt: bool = False

    def extra_prefixes(self) -> list[str]:
        """Env prefixes given one by one, and those of environments.txt when asked (read now)."""
        prefixes = list(self.extra_envs)
        if self.environments_txt:
            prefixes += environments_txt_prefixes()
        return prefixes

    def layouts(self) -> list[RootLayout]:
        """One layout per root, then one (``path == ""``) for the envs no root holds, if any."""
        layouts = [discover_root(root) for root in self.roots]
        external = discover_external(self.extra_prefixes(), layouts)
        return [*layouts, external] if external else layouts
