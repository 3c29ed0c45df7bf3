"""A small conda-like root for the Prometheus end-to-end test, and the changes the test makes to it over time.

Laid out as conda leaves a root: extracted packages in ``pkgs/`` (with ``info/``), their files hardlinked into
the base env and ``envs/<name>/``, a ``conda-meta/<dist>.json`` record per linked package and a
``conda-meta/history`` per env, plus one downloaded tarball and one extracted package linked nowhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

SP = "lib/python3.11/site-packages"
# dist name -> {path inside the prefix: size in bytes}
PACKAGES: dict[str, dict[str, int]] = {
    "python-3.11.7-h955ad1f_0": {"bin/python3.11": 96_000, "lib/libpython3.11.so": 64_000},
    "numpy-1.26.4-py311h64a7726_0": {f"{SP}/numpy/__init__.py": 8_000, f"{SP}/numpy/_core.so": 120_000},
    "requests-2.31.0-pyhd8ed1ab_0": {f"{SP}/requests/__init__.py": 5_000, f"{SP}/requests/api.py": 7_000},
    "pandas-2.2.1-py311h320fe9a_0": {f"{SP}/pandas/__init__.py": 6_000, f"{SP}/pandas/_libs.so": 90_000},
    "scipy-1.12.0-py311h64a7726_2": {f"{SP}/scipy/linalg.so": 150_000},  # extracted, linked nowhere
}
ENVS: dict[str, tuple[str, ...]] = {
    "base": ("python-3.11.7-h955ad1f_0", "requests-2.31.0-pyhd8ed1ab_0"),
    "alpha": ("python-3.11.7-h955ad1f_0", "numpy-1.26.4-py311h64a7726_0"),
    "beta": ("python-3.11.7-h955ad1f_0", "requests-2.31.0-pyhd8ed1ab_0"),
    "gamma": ("python-3.11.7-h955ad1f_0", "numpy-1.26.4-py311h64a7726_0", "pandas-2.2.1-py311h320fe9a_0"),
}


def _content(seed: str, size: int) -> bytes:
    """Incompressible-looking bytes, so every filesystem allocates them."""
    block = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(128))  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def prefix_of(root: Path, env: str) -> Path:
    return root if env == "base" else root / "envs" / env


def extract_package(root: Path, dist: str, files: dict[str, int]) -> None:
    """Write an extracted package into ``pkgs/`` as conda leaves it after a download."""
    package = root / "pkgs" / dist
    (package / "info").mkdir(parents=True)
    for rel, size in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_bytes(_content(dist + rel, size))
    name, version, build = dist.rsplit("-", 2)
    (package / "info" / "index.json").write_text(json.dumps({"name": name, "version": version, "build": build}))
    paths = [{"_path": rel, "path_type": "hardlink", "size_in_bytes": size} for rel, size in files.items()]
    (package / "info" / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))


def link_package(root: Path, env: str, dist: str) -> None:
    """Hardlink an extracted package's files into an env and record it in conda-meta, as `conda install` does."""
    prefix = prefix_of(root, env)
    source = root / "pkgs" / dist
    files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()
             and p.relative_to(source).parts[0] != "info"]
    for rel in files:
        (prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / rel, prefix / rel)
    name, version, build = dist.rsplit("-", 2)
    record = {"name": name, "version": version, "build": build, "files": sorted(files),
              "link": {"source": str(source), "type": 1}}
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / f"{dist}.json").write_text(json.dumps(record))
    with (meta / "history").open("a") as history:
        history.write(f"==> 2026-01-01 00:00:00 <==\n# cmd: conda install -n {env} {name}\n+defaults::{dist}\n")


def build_root(root: Path) -> Path:
    """Create the root at ``root`` (which must not exist yet) and return it."""
    for dist, files in PACKAGES.items():
        extract_package(root, dist, files)
    (root / "pkgs" / "requests-2.31.0-pyhd8ed1ab_0.conda").write_bytes(_content("tarball", 40_000))
    for env, dists in ENVS.items():
        for dist in dists:
            link_package(root, env, dist)
    return root


def grow_env(root: Path, env: str, size: int) -> None:
    """Write a file no package installed into the env (pip output, data, caches)."""
    target = prefix_of(root, env) / "share" / "data" / f"blob-{size}.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_content(str(target), size))


def install_new_package(root: Path, env: str, dist: str, files: dict[str, int]) -> None:
    """Download-extract a package into pkgs/ and link it into an env."""
    extract_package(root, dist, files)
    link_package(root, env, dist)


def delete_env(root: Path, env: str) -> None:
    shutil.rmtree(prefix_of(root, env))
