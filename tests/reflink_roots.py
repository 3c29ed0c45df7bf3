"""Conda roots on a reflink filesystem, built the ways installers leave them: files hardlinked from the
package cache (conda, mamba), reflinked from it (``cp --reflink=always``, as pixi, uv and rattler do
where they can), and plain copies; with the shapes the accounting must tell apart (see
:func:`build_reflink_root`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from exporter.demo import DEMO_PACKAGES, DemoPackage, write_package

BY_NAME = {p.name: p for p in DEMO_PACKAGES}


def reflink(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "--reflink=always", str(source), str(target)], check=True)


def install(prefix: Path, pkgs: Path, package: DemoPackage, how: str) -> None:
    """Install ``package`` from ``pkgs`` into ``prefix`` by ``how`` (``hardlink``, ``reflink``, ``copy``), with
    a conda-meta record saying link type 1 (hardlink: what rattler writes for a reflink too) or 3 (copy)."""
    (prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
    history = prefix / "conda-meta" / "history"
    if not history.exists():
        history.write_text("==> 2026-01-01 00:00:00 <==\n")
    for rel in package.files:
        source, target = pkgs / package.dist / rel, prefix / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if how == "hardlink":
            os.link(source, target)
        elif how == "reflink":
            reflink(source, target)
        else:
            subprocess.run(["cp", "--reflink=never", str(source), str(target)], check=True)
    record = {
        "name": package.name, "version": package.version, "build": package.build, "files": list(package.files),
        "link": {"source": str(pkgs / package.dist), "type": 3 if how == "copy" else 1},
    }
    (prefix / "conda-meta" / f"{package.dist}.json").write_text(json.dumps(record))


def random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


ENVS = ("hard", "rl", "rl2", "copies", "self", "outside")


def build_reflink_root(root: Path, outside: Path) -> dict[str, Path]:
    """A root at ``root`` (on a reflink filesystem) and a file outside it at ``outside`` (same filesystem,
    not scanned); returns its envs by name (``base`` is ``root``).

    * base: python and conda hardlinked; ``hard``: python and requests hardlinked;
    * ``rl``: python (hardlinked elsewhere too), numpy, pandas reflinked from the cache;
    * ``rl2``: numpy (so three files share its extents), scipy and pytorch reflinked, then pytorch's cache
      entry deleted (its extents are no longer shared);
    * ``copies``: pandas installed as plain copies (link type copy);
    * ``self``: requests reflinked; an untracked file and its reflink copy (shared only inside the env: its
      own cost); two untracked reflink copies of one cache file (shared with the cache too); a reflink of
      the cache's tarball; a file of 100 extents and its reflink (more than one FIEMAP call returns);
    * ``outside``: an untracked file reflinked to a copy outside the root (shared with something unseen);
    * the cache: matplotlib linked nowhere and ``mpl-copy``, a reflinked copy of it (clean alone removes
      both: their shared extents are then freed); scipy, only reflinked, is unreferenced too by conda's rule
      (no file with two links), but cleaning it frees none of its shared bytes.
    """
    pkgs = root / "pkgs"
    for package in DEMO_PACKAGES:
        write_package(pkgs, package)
    (pkgs / f"{BY_NAME['requests'].dist}.conda").write_bytes(os.urandom(90_000))
    envs = {"base": root, **{name: root / "envs" / name for name in ENVS}}
    plan = {
        "base": [("python", "hardlink"), ("conda", "hardlink")],
        "hard": [("python", "hardlink"), ("requests", "hardlink")],
        "rl": [("python", "reflink"), ("numpy", "reflink"), ("pandas", "reflink")],
        "rl2": [("numpy", "reflink"), ("scipy", "reflink"), ("pytorch", "reflink")],
        "copies": [("pandas", "copy")],
        "self": [("requests", "reflink")],
        "outside": [("requests", "hardlink")],
    }
    for name, installs in plan.items():
        for package_name, how in installs:
            install(envs[name], pkgs, BY_NAME[package_name], how)
    shutil.rmtree(pkgs / BY_NAME["pytorch"].dist)
    own = envs["self"] / "share" / "blob"
    random_file(own, 300_000)
    reflink(own, envs["self"] / "share" / "blob-copy")
    numpy_so = pkgs / BY_NAME["numpy"].dist / next(iter(BY_NAME["numpy"].files))
    reflink(numpy_so, envs["self"] / "share" / "dup-a")
    reflink(numpy_so, envs["self"] / "share" / "dup-b")
    # more extents than one FIEMAP call returns (64): 100 blocks with holes between, and its reflink
    fragmented = envs["self"] / "share" / "fragmented"
    with open(fragmented, "wb") as handle:
        for i in range(100):
            handle.seek(i * 3 * 4096)
            handle.write(os.urandom(4096))
    reflink(fragmented, envs["self"] / "share" / "fragmented-copy")
    # a tarball (a file of the cache dir itself, in no package dir) reflinked into an env
    reflink(pkgs / f"{BY_NAME['requests'].dist}.conda", envs["self"] / "share" / "downloaded.conda")
    random_file(envs["outside"] / "share" / "kept-elsewhere", 200_000)
    reflink(envs["outside"] / "share" / "kept-elsewhere", outside)
    matplotlib = pkgs / BY_NAME["matplotlib"].dist
    copy = pkgs / "mpl-copy-1.0-0"
    for path in sorted(matplotlib.rglob("*")):
        if path.is_file():
            reflink(path, copy / path.relative_to(matplotlib))
    (envs["hard"] / "stray-in-envs").touch()
    (root / "envs" / "not-an-env").mkdir()
    reflink(numpy_so, root / "envs" / "not-an-env" / "numpy-copy")  # in the root's rest: never freed
    subprocess.run(["sync", "-f", str(root)], check=True)
    return envs


def oracle_trees(root: Path, envs: dict[str, Path]) -> dict[str, tuple[Path, list[Path]]]:
    """The trees partitioning ``root`` as the exporter counts them: each env, the cache, the rest of envs/."""
    trees = {name: (prefix, [root / "envs", root / "pkgs"] if prefix == root else []) for name, prefix in envs.items()}
    trees["pkgs"] = (root / "pkgs", [])
    trees["rest"] = (root / "envs", [p for p in envs.values() if p != root])
    return trees
