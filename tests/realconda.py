"""Real conda environments, written by a real installer: py-rattler (the library behind pixi).

The test builds a few small conda packages (``.tar.bz2`` with ``info/index.json``, ``info/paths.json``,
``info/files``; one file carries a prefix placeholder that the installer rewrites), indexes them as a
local ``file://`` channel with ``rattler.index``, and solves and installs them with ``rattler.solve``
and ``rattler.install`` into several prefixes that share one package cache. Hardlinks, the cache
layout and the ``conda-meta/*.json`` records are all the installer's own. Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rattler import Channel, install, solve
from rattler.index import index_fs

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
_MTIME = 1_700_000_000


def _payload(seed: str, size: int) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 128
    return (block * (size // len(block) + 1))[:size]


@dataclass(frozen=True)
class Package:
    """A package to build: ``files`` maps a prefix-relative path to its bytes."""

    name: str
    version: str
    files: dict[str, bytes]
    depends: tuple[str, ...] = ()
    placeholder_paths: tuple[str, ...] = ()


PACKAGES = (
    Package("alpha", "1.0", {"lib/alpha/core.so": _payload("alpha", 50_000), "lib/alpha/__init__.py": b"x = 1\n",
                             "bin/alpha-config": f"#!/bin/sh\necho {PLACEHOLDER}\n".encode()},
            placeholder_paths=("bin/alpha-config",)),
    Package("beta", "2.0", {"share/beta/data.bin": _payload("beta", 120_000)}, depends=("alpha",)),
    Package("gamma", "0.3", {"lib/gamma/gamma.so": _payload("gamma", 80_000)}),
    Package("delta", "4.1", {"share/delta/blob": _payload("delta", 40_000)}),
)


def build_package(channel: Path, package: Package) -> None:
    """Write ``package`` as ``channel/noarch/<name>-<version>-0.tar.bz2``."""
    subdir = channel / "noarch"
    subdir.mkdir(parents=True, exist_ok=True)
    index = {"name": package.name, "version": package.version, "build": "0", "build_number": 0,
             "depends": list(package.depends), "subdir": "noarch", "noarch": "generic",
             "timestamp": _MTIME * 1000, "license": "MIT"}
    paths = []
    for rel, data in package.files.items():
        entry: dict[str, object] = {"_path": rel, "path_type": "hardlink",
                                    "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
        if rel in package.placeholder_paths:
            entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
        paths.append(entry)
    members = dict(package.files)
    members["info/index.json"] = json.dumps(index).encode()
    members["info/paths.json"] = json.dumps({"paths": paths, "paths_version": 1}).encode()
    members["info/files"] = "".join(f"{rel}\n" for rel in package.files).encode()
    if package.placeholder_paths:
        members["info/has_prefix"] = "".join(f"{PLACEHOLDER} text {p}\n" for p in package.placeholder_paths).encode()
    with tarfile.open(subdir / f"{package.name}-{package.version}-0.tar.bz2", "w:bz2") as tar:
        for rel, data in members.items():
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o755 if rel.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class RealRoot:
    """What was built. ``copied_env`` is None when no second filesystem could be mounted for its cache."""

    root: Path
    pkgs: Path
    envs: dict[str, Path]
    copied_env: Path | None
    copied_cache: Path | None
    removed_package_env: Path
    removed_package: str
    deleted_env: Path
    untracked_file: Path
    relocated_file: Path


async def _install(channel: Path, specs: list[str], prefix: Path, cache: Path) -> None:
    records = await solve(sources=[Channel(channel.as_uri())], specs=specs, platforms=["noarch"],
                          virtual_packages=[])
    await install(records, target_prefix=prefix, cache_dir=cache, show_progress=False)


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                          capture_output=True, check=False).returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def build_real_conda_root(workdir: Path) -> RealRoot:
    """Build the channel and install the envs below ``workdir`` (which must be empty or absent)."""
    channel = workdir / "channel"
    for package in PACKAGES:
        build_package(channel, package)
    asyncio.run(index_fs(channel_directory=channel, write_zst=False, write_shards=False))
    root = workdir / "conda"
    pkgs = root / "pkgs"
    envs = {name: root / "envs" / name for name in ("full", "slim", "pip", "gone")}

    async def install_all() -> Path | None:
        await _install(channel, ["alpha"], root, pkgs)  # the base env
        await _install(channel, ["beta", "gamma"], envs["full"], pkgs)
        await _install(channel, ["beta", "gamma"], envs["slim"], pkgs)
        await _install(channel, ["beta"], envs["slim"], pkgs)  # gamma removed from slim
        await _install(channel, ["beta"], envs["pip"], pkgs)
        await _install(channel, ["delta"], envs["gone"], pkgs)  # then deleted: delta stays in the cache
        other_fs = workdir / "otherfs"
        if not _mount_tmpfs(other_fs):
            return None
        # a cache on another filesystem: the installer cannot hardlink and copies every file
        await _install(channel, ["beta"], root / "envs" / "copied", other_fs / "pkgs")
        return other_fs

    other_fs = asyncio.run(install_all())
    shutil.rmtree(envs.pop("gone"))
    untracked = envs["pip"] / "lib" / "python3.11" / "site-packages" / "pipmod" / "__init__.py"
    untracked.parent.mkdir(parents=True)
    untracked.write_bytes(_payload("pip", 30_000))
    copied_cache = other_fs / "pkgs" if other_fs else None
    if copied_cache:
        (root / ".condarc").write_text(f"pkgs_dirs:\n  - {copied_cache}\n")
        envs["copied"] = root / "envs" / "copied"
    return RealRoot(
        root=root,
        pkgs=pkgs,
        envs={"base": root, **envs},
        copied_env=envs.get("copied"),
        copied_cache=copied_cache,
        removed_package_env=envs["slim"],
        removed_package="gamma",
        deleted_env=root / "envs" / "gone",
        untracked_file=untracked,
        relocated_file=envs["full"] / "bin" / "alpha-config",
    )
