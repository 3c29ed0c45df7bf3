"""Discover step: find conda roots and lay out what in them is an env, a package cache, or neither.

A *root* is a conda installation directory. The root itself is the ``base`` env (when it has
``conda-meta/``), ``ROOT/envs/<name>/`` are named envs (a directory there without ``conda-meta/`` is
*ignored* and reported, never counted as an env) and ``ROOT/pkgs/`` is the package cache.
Discovery only lists directories; it reads no file contents and never follows symlinks.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EnvLocation",
    "RootLayout",
    "RootNotFoundError",
    "detect_roots",
    "discover_root",
    "label_value",
]

log = logging.getLogger(__name__)

BASE_ENV_NAME = "base"
# Where installers put a root when nobody says otherwise, relative to $HOME, then absolute.
HOME_CANDIDATES = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba")
SYSTEM_CANDIDATES = ("/opt/conda", "/opt/miniconda3", "/opt/miniforge3", "/opt/anaconda3")


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
    """Make a file name safe for a label value: valid UTF-8, undecodable bytes shown as ``\\xNN``.

    File names come in as ``str`` with undecodable bytes as surrogates (``os.fsdecode``); quotes,
    backslashes and newlines are escaped later by the exposition format itself.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def looks_like_root(path: str) -> bool:
    """True when ``path`` holds any of ``conda-meta/``, ``envs/`` or ``pkgs/`` (a micromamba root may
    have no base env)."""
    return any(_is_dir(os.path.join(path, part)) for part in ("conda-meta", "envs", "pkgs"))


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
                f"{os.fspath(given)!r} is not a conda root: it has none of conda-meta/, envs/, pkgs/"
            )
        if path not in roots:
            roots.append(path)
    return roots


def discover_root(root: str) -> RootLayout:
    """List the envs and package caches of ``root`` (an absolute, resolved path)."""
    envs_container = os.path.join(root, "envs")
    pkgs_dir = os.path.join(root, "pkgs")
    has_envs = _is_dir(envs_container)
    pkgs_dirs = (pkgs_dir,) if _is_dir(pkgs_dir) else ()

    envs: list[EnvLocation] = []
    if _is_dir(os.path.join(root, "conda-meta")):
        exclude = frozenset(p for p in (envs_container, pkgs_dir) if _is_dir(p))
        envs.append(EnvLocation(root=root, name=BASE_ENV_NAME, prefix=root, exclude=exclude, pkgs_dirs=pkgs_dirs))

    ignored: list[str] = []
    if has_envs:
        try:
            with os.scandir(envs_container) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list envs dir %r: %s", envs_container, exc.strerror)
            children = []
        for entry in children:
            prefix = os.path.join(envs_container, entry.name)
            if not entry.is_dir(follow_symlinks=False):
                continue  # stray files and symlinks are counted by the root total only
            if _is_dir(os.path.join(prefix, "conda-meta")):
                envs.append(EnvLocation(root=root, name=entry.name, prefix=prefix, pkgs_dirs=pkgs_dirs))
            else:
                ignored.append(prefix)
    for path in ignored:
        log.info("ignoring %r: a directory in envs/ without conda-meta/ is not an environment", path)

    return RootLayout(
        path=root,
        envs=tuple(envs),
        pkgs_dirs=pkgs_dirs,
        envs_container=envs_container if has_envs else None,
        ignored_dirs=tuple(ignored),
    )
