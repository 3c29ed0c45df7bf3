"""Where conda is configured to keep envs and package caches besides ``ROOT/envs`` and ``ROOT/pkgs``.

Sources, in conda's own search order (``conda/base/constants.py: SEARCH_PATH``): system files under
``/etc/conda`` and ``/var/lib/conda``, the root's own ``ROOT/.condarc`` and ``ROOT/condarc.d/``, the
user's ``~/.config/conda``, ``~/.conda`` and ``~/.condarc``, then ``$CONDARC``; and the variables
``CONDA_ENVS_PATH``/``CONDA_ENVS_DIRS`` and ``CONDA_PKGS_DIRS`` (separated by ``os.pathsep`` or ``,``).
A file that cannot be read or parsed is skipped with a warning: a broken ``.condarc`` must not stop
the exporter, and conda itself would complain about it loudly enough.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.discover.smallfile import read_small_file

__all__ = ["CondaDirs", "config_files", "read_conda_dirs"]

log = logging.getLogger(__name__)

_SYSTEM_FILES = (
    "/etc/conda/.condarc",
    "/etc/conda/condarc",
    "/etc/conda/condarc.d/*.yml",
    "/etc/conda/condarc.d/*.yaml",
    "/var/lib/conda/.condarc",
    "/var/lib/conda/condarc",
    "/var/lib/conda/condarc.d/*.yml",
    "/var/lib/conda/condarc.d/*.yaml",
)
_ROOT_FILES = ("{root}/.condarc", "{root}/condarc", "{root}/condarc.d/*.yml", "{root}/condarc.d/*.yaml")
_USER_FILES = (
    "{home}/.config/conda/.condarc",
    "{home}/.config/conda/condarc",
    "{home}/.config/conda/condarc.d/*.yml",
    "{home}/.conda/.condarc",
    "{home}/.conda/condarc",
    "{home}/.conda/condarc.d/*.yml",
    "{home}/.condarc",
)


@dataclass(frozen=True)
class CondaDirs:
    """Extra directories configured for a root, absolute and de-duplicated, in configuration order."""

    envs_dirs: tuple[str, ...] = ()
    pkgs_dirs: tuple[str, ...] = ()


def config_files(root: str, home: str | None, environ: Mapping[str, str]) -> list[str]:
    """Existing configuration files that apply to ``root``, in conda's search order."""
    patterns = list(_SYSTEM_FILES) + [p.format(root=root) for p in _ROOT_FILES]
    if home:
        patterns += [p.format(home=home) for p in _USER_FILES]
    if environ.get("CONDARC"):
        patterns.append(environ["CONDARC"])
    files: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) if "*" in pattern else [pattern]:
            if os.path.isfile(path) and path not in files:
                files.append(path)
    return files


# A .condarc is a few hundred bytes; 1 MiB bounds what a file put in its place (a FIFO is refused) can cost.
MAX_CONDARC_BYTES = 1 << 20


def _dirs_from(path: str, key: str, data: Mapping[str, object]) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        log.warning("ignoring %s in %r: expected a list of paths", key, path)
        return []
    return list(value)


def _split_env_var(value: str) -> list[str]:
    return [part for chunk in value.split(os.pathsep) for part in chunk.split(",") if part.strip()]


def _expand(path: str, home: str | None) -> str:
    path = os.path.expandvars(path)
    if path.startswith("~") and home:
        path = home + path[1:]
    return os.path.abspath(path)


def read_conda_dirs(root: str, home: str | None, environ: Mapping[str, str]) -> CondaDirs:
    """``envs_dirs`` and ``pkgs_dirs`` configured for ``root`` (the root's own ``envs``/``pkgs`` excluded)."""
    envs: list[str] = []
    pkgs: list[str] = []
    for path in config_files(root, home, environ):
        import yaml  # imported here, once: most roots have no conda configuration, and PyYAML takes ~10 ms

        try:
            data = yaml.safe_load(read_small_file(path, MAX_CONDARC_BYTES).decode("utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            log.warning("skipping conda configuration %r: %s", path, exc)
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            log.warning("skipping conda configuration %r: not a mapping", path)
            continue
        envs += _dirs_from(path, "envs_dirs", data)
        pkgs += _dirs_from(path, "pkgs_dirs", data)
    for var in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        envs += _split_env_var(environ.get(var, ""))
    pkgs += _split_env_var(environ.get("CONDA_PKGS_DIRS", ""))
    own = {os.path.join(root, "envs"), os.path.join(root, "pkgs")}

    def clean(paths: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for raw in paths:
            path = _expand(raw, home)
            if path not in own and path not in out:
                out.append(path)
        return tuple(out)

    return CondaDirs(envs_dirs=clean(envs), pkgs_dirs=clean(pkgs))
