"""A small, realistic conda-like root for ``conda-env-exporter demo`` and for newcomers without conda.

It is laid out the way conda leaves a root: extracted packages in ``pkgs/`` whose files are
hardlinked into ``envs/<name>/`` and into the base env, ``conda-meta/<pkg>.json`` records and a
``conda-meta/history`` per env, one package installed as copies, pip-installed files, a symlink, a
tarball, an extracted package linked nowhere (``conda clean -p`` would free it) and an env whose
package was removed from the cache after linking (its files are then unique to the env).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_PACKAGES", "DemoPackage", "build_demo_root", "link_package", "write_package"]


@dataclass(frozen=True)
class DemoPackage:
    """A package of the demo: ``files`` maps a path inside the prefix to its size in bytes."""

    name: str
    version: str
    build: str
    files: dict[str, int]

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


SP = "lib/python3.11/site-packages"
DEMO_PACKAGES = (
    DemoPackage("python", "3.11.7", "h955ad1f_0", {"bin/python3.11": 180_000, "lib/libpython3.11.so": 120_000,
                                                    "lib/python3.11/os.py": 39_000}),
    DemoPackage("numpy", "1.26.4", "py311h64a7726_0", {f"{SP}/numpy/__init__.py": 10_000,
                                                        f"{SP}/numpy/core/_multiarray_umath.so": 260_000}),
    DemoPackage("pandas", "2.2.1", "py311h320fe9a_0", {f"{SP}/pandas/__init__.py": 7_000,
                                                        f"{SP}/pandas/_libs/lib.so": 210_000}),
    DemoPackage("requests", "2.31.0", "pyhd8ed1ab_0", {f"{SP}/requests/__init__.py": 5_000,
                                                        f"{SP}/requests/api.py": 6_400}),
    DemoPackage("scipy", "1.12.0", "py311h64a7726_2", {f"{SP}/scipy/__init__.py": 4_000,
                                                        f"{SP}/scipy/linalg/_flapack.so": 330_000}),
    DemoPackage("conda", "24.1.2", "py311h06a4308_0", {f"{SP}/conda/__init__.py": 3_000, "bin/conda": 1_200}),
    DemoPackage("pytorch", "2.2.0", "cpu_py311h0", {f"{SP}/torch/lib/libtorch_cpu.so": 400_000}),
    # extracted but linked into no env: what `conda clean --packages` frees
    DemoPackage("matplotlib", "3.8.3", "py311h38be061_0", {f"{SP}/matplotlib/_path.so": 150_000}),
)
_BY_NAME = {p.name: p for p in DEMO_PACKAGES}

# env name -> (packages linked, packages installed as copies)
DEMO_ENVS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": (("python", "conda", "requests"), ()),
    "analysis": (("python", "numpy", "pandas"), ()),
    "science": (("python", "numpy", "scipy"), ("pandas",)),
    "web": (("python", "requests"), ()),
}


def _content(seed: str, size: int) -> bytes:
    """Deterministic, incompressible-looking bytes (so filesystems allocate them for real)."""
    block = hashlib.sha256(seed.encode()).digest() * 128  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def write_package(pkgs: Path, package: DemoPackage) -> None:
    """Extract ``package`` into the cache ``pkgs`` as conda does: files, ``info/index.json``, ``paths.json``."""
    extracted = pkgs / package.dist
    (extracted / "info").mkdir(parents=True, exist_ok=True)
    paths = []
    for rel, size in package.files.items():
        target = extracted / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_content(package.dist + rel, size))
        paths.append({"_path": rel, "path_type": "hardlink", "size_in_bytes": size})
    index = {"name": package.name, "version": package.version, "build": package.build, "depends": []}
    (extracted / "info" / "index.json").write_text(json.dumps(index))
    (extracted / "info" / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))


def link_package(prefix: Path, pkgs: Path, package: DemoPackage, copy: bool) -> None:
    """Install ``package`` from ``pkgs`` into ``prefix`` (hardlinks, or copies) with its conda-meta record;
    ``prefix/conda-meta`` must exist."""
    paths = []
    for rel, size in package.files.items():
        source = pkgs / package.dist / rel
        target = prefix / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(source, target)
        else:
            os.link(source, target)
        paths.append({"_path": rel, "path_type": "hardlink", "size_in_bytes": size})
    record = {
        "name": package.name,
        "version": package.version,
        "build": package.build,
        "files": list(package.files),
        "paths_data": {"paths": paths, "paths_version": 1},
        "link": {"source": str(pkgs / package.dist), "type": 3 if copy else 1},
    }
    (prefix / "conda-meta" / f"{package.dist}.json").write_text(json.dumps(record))


def build_demo_root(root: Path) -> Path:
    """Create the demo root at ``root`` (which must not exist yet) and return it."""
    pkgs = root / "pkgs"
    pkgs.mkdir(parents=True)
    for package in DEMO_PACKAGES:
        write_package(pkgs, package)
    (pkgs / f"{_BY_NAME['requests'].dist}.conda").write_bytes(_content("tarball", 90_000))

    for env_name, (linked, copied) in DEMO_ENVS.items():
        prefix = root if env_name == "base" else root / "envs" / env_name
        (prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
        history = prefix / "conda-meta" / "history"
        history.write_text(f"==> 2026-01-01 00:00:00 <==\n# cmd: conda create -n {env_name}\n")
        for name in linked:
            link_package(prefix, pkgs, _BY_NAME[name], copy=False)
        for name in copied:
            link_package(prefix, pkgs, _BY_NAME[name], copy=True)

    # pip-installed files belong to no conda package and exist once.
    pip_dir = root / "envs" / "analysis" / SP / "seaborn"
    pip_dir.mkdir(parents=True)
    (pip_dir / "__init__.py").write_bytes(_content("seaborn", 60_000))
    (root / "envs" / "analysis" / "bin").mkdir(exist_ok=True)
    os.symlink("python3.11", root / "envs" / "analysis" / "bin" / "python")

    # pytorch was linked into "science", then its cache dir was removed: the env's copy is now unique.
    science = root / "envs" / "science"
    link_package(science, pkgs, _BY_NAME["pytorch"], copy=False)
    shutil.rmtree(pkgs / _BY_NAME["pytorch"].dist)
    return root
