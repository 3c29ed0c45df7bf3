"""A root whose package cache is hierarchical, as mamba >= 2.6 leaves it (mamba-org/mamba#4163), with one
flat package beside, as after an upgrade in place; and the changes conda/mamba make to such a root.

``pkgs/<channel...>/<platform>/<name>-<version>-<build>/`` with the archive beside it; ``<channel>`` is one
dir for a named channel and several for a URL channel (``https/repo.example.org/labs``); ``urls.txt`` and
``cache/`` stay at the top.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

SP = "lib/python3.12/site-packages"
# where a package lives below pkgs/ ("" = flat), its dist name, its files (path: size)
PACKAGES: dict[str, tuple[str, dict[str, int]]] = {
    "python": ("", {"bin/python3.12": 90_000, "lib/libpython3.12.so": 60_000}),
    "numpy": ("conda-forge/linux-64", {f"{SP}/numpy/__init__.py": 9_000, f"{SP}/numpy/_core.so": 110_000}),
    "requests": ("conda-forge/noarch", {f"{SP}/requests/__init__.py": 6_000, f"{SP}/requests/api.py": 8_000}),
    "labtool": ("https/repo.example.org/labs/linux-64", {"bin/labtool": 70_000}),
    "labdata": ("https/repo.example.org/labs/noarch", {"share/labdata/table.bin": 50_000}),  # linked nowhere
    "orgpkg": ("my-org-channel/linux-64", {f"{SP}/orgpkg/core.py": 30_000}),  # installed by copying
}
DISTS = {
    "python": "python-3.12.0-h1_0",
    "numpy": "numpy-2.0.0-py312_0",
    "requests": "requests-2.32.0-pyhd8ed1ab_0",
    "labtool": "labtool-0.3-h0_1",
    "labdata": "labdata-1.0-0",
    "orgpkg": "orgpkg-1.0-h1_0",
}
ENVS: dict[str, tuple[str, ...]] = {
    "base": ("python",),
    "alpha": ("python", "numpy", "requests"),
    "beta": ("python", "labtool", "orgpkg"),
}
COPIED = {"orgpkg"}
HALF = "conda-forge/linux-64/scipy-1.14.0-py312_0"  # an extraction that never finished, its archive beside


def content(seed: str, size: int) -> bytes:
    """Incompressible-looking bytes, so every filesystem allocates them."""
    block = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(128))
    return (block * (size // len(block) + 1))[:size]


def prefix_of(root: Path, env: str) -> Path:
    return root if env == "base" else root / "envs" / env


def _url(where: str, dist: str) -> tuple[str, str, str]:
    """(url, channel, subdir) a record of a package from ``where`` names."""
    channel_dir, _, subdir = where.rpartition("/")
    if channel_dir.startswith("https/"):
        channel = "https://" + channel_dir.removeprefix("https/")
    else:
        channel = f"https://conda.anaconda.org/{channel_dir or 'pkgs/main'}"
    return f"{channel}/{subdir or 'linux-64'}/{dist}.conda", channel, subdir or "linux-64"


def extract(root: Path, where: str, dist: str, files: dict[str, int], archive: bool = True) -> Path:
    """Download (``<dist>.conda`` beside) and extract a package into ``pkgs/<where>/<dist>``."""
    level = root / "pkgs" / where if where else root / "pkgs"
    package = level / dist
    (package / "info").mkdir(parents=True)
    for rel, size in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_bytes(content(dist + rel, size))
    name, version, build = dist.rsplit("-", 2)
    (package / "info" / "paths.json").write_text(json.dumps({"paths": [{"_path": r} for r in files]}))
    (package / "info" / "index.json").write_text(json.dumps({"name": name, "version": version, "build": build}))
    if archive:
        (level / f"{dist}.conda").write_bytes(content(f"archive {dist}", 20_000 + len(files) * 3_000))
    with (root / "pkgs" / "urls.txt").open("a") as urls:
        urls.write(_url(where, dist)[0] + "\n")
    return package


def link(root: Path, env: str, package: Path, where: str, *, copy: bool = False, with_source: bool = True) -> None:
    """Link (or copy) an extracted package into an env and write its conda-meta record, as mamba does."""
    prefix = prefix_of(root, env)
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*")
                   if p.is_file() and p.relative_to(package).parts[0] != "info")
    for rel in files:
        (prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(package / rel, prefix / rel)
        else:
            os.link(package / rel, prefix / rel)
    name, version, build = package.name.rsplit("-", 2)
    url, channel, subdir = _url(where, package.name)
    record: dict[str, object] = {
        "name": name, "version": version, "build": build, "files": files, "url": url, "channel": channel,
        "subdir": subdir, "link": {"type": 3 if copy else 1, **({"source": str(package)} if with_source else {})},
    }
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    tmp = meta / f".{package.name}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, meta / f"{package.name}.json")
    with (meta / "history").open("a") as history:
        history.write(f"==> 2026-03-01 00:00:00 <==\n+{channel}::{package.name}\n")


def unlink(root: Path, env: str, dist: str) -> None:
    """Remove a package from an env: its files, then its record."""
    prefix = prefix_of(root, env)
    record = prefix / "conda-meta" / f"{dist}.json"
    for rel in json.loads(record.read_text())["files"]:
        (prefix / rel).unlink(missing_ok=True)
    record.unlink()


def package_dir(root: Path, key: str) -> Path:
    where, _ = PACKAGES[key]
    return root / "pkgs" / where / DISTS[key] if where else root / "pkgs" / DISTS[key]


def build_nested_root(root: Path) -> Path:
    """The root (``root`` must not exist): see the module doc and the tables above."""
    (root / "pkgs" / "cache").mkdir(parents=True)
    (root / "pkgs" / "cache" / "8ad1c2e4.json").write_bytes(content("repodata", 40_000))
    for key, (where, files) in PACKAGES.items():
        extract(root, where, DISTS[key], files)
    for env, keys in ENVS.items():
        for key in keys:
            # orgpkg's record says where it came from only by url/channel/subdir, as some installers write
            link(root, env, package_dir(root, key), PACKAGES[key][0], copy=key in COPIED,
                 with_source=key not in COPIED)
    half = root / "pkgs" / HALF
    (half / "lib").mkdir(parents=True)
    (half / "lib" / "libscipy.so").write_bytes(content("half", 45_000))
    (half.parent / f"{half.name}.conda").write_bytes(content("scipy archive", 30_000))
    (root / "pkgs" / "conda-forge" / "osx-64").mkdir()  # emptied by a clean: a platform dir, not leftover
    return root
