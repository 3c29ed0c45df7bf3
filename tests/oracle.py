"""Independent oracle: disk usage computed from GNU find and du output, never from exporter code."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One line of ``find -printf '%D %i %n %b %s %y'``: device, inode, links, 512-B blocks, size, type."""

    dev: int
    ino: int
    nlink: int
    blocks: int
    size: int
    kind: str


@dataclass(frozen=True)
class TreeNumbers:
    unique_bytes: int
    shared_bytes: int
    apparent_bytes: int
    files: int
    hardlinked_files: int


def find_rows(top: Path, prune: list[Path] | None = None) -> list[Row]:
    """Every path under ``top`` (itself included), not following symlinks, not leaving its filesystem,
    leaving out the ``prune`` directories entirely."""
    cmd: list[str] = ["find", str(top), "-xdev"]
    for path in prune or []:
        cmd += ["-path", str(path), "-prune", "-o"]
    cmd += ["-printf", "%D %i %n %b %s %y\\n"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        dev, ino, nlink, blocks, size, kind = line.split()
        rows.append(Row(int(dev), int(ino), int(nlink), int(blocks), int(size), kind))
    return rows


def tree_numbers(top: Path, prune: list[Path] | None = None) -> TreeNumbers:
    """Unique/shared/apparent/files of one tree by the definition: an inode is unique when all its
    links were found in the tree (directories always are)."""
    rows = find_rows(top, prune)
    found = Counter((r.dev, r.ino) for r in rows if r.kind != "d")
    unique = shared = 0
    seen: set[tuple[int, int]] = set()
    for r in rows:
        key = (r.dev, r.ino)
        if key in seen:
            continue
        seen.add(key)
        if r.kind == "d" or found[key] >= r.nlink:
            unique += r.blocks * 512
        else:
            shared += r.blocks * 512
    files = [r for r in rows if r.kind != "d"]
    return TreeNumbers(
        unique_bytes=unique,
        shared_bytes=shared,
        apparent_bytes=sum(r.size for r in rows),
        files=len(files),
        hardlinked_files=sum(1 for r in files if r.nlink > 1),
    )


def du_bytes(path: Path) -> int:
    """``du -s -B1 -x``: allocated bytes, each inode once."""
    out = subprocess.run(["du", "-s", "-x", "-B1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def du_apparent_bytes(path: Path) -> int:
    """``du -s -x -b -l``: st_size of every path, every link counted."""
    out = subprocess.run(["du", "-s", "-x", "-b", "-l", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def pkgs_oracle(pkgs: Path) -> dict[str, int]:
    """What conda clean would free, by conda's rules, from find output."""
    tarball_blocks = tarballs = 0
    for line in subprocess.run(
        ["find", str(pkgs), "-maxdepth", "1", "-type", "f", "-links", "1", "(", "-name", "*.conda", "-o",
         "-name", "*.tar.bz2", "-o", "-name", "*.conda.part", "-o", "-name", "*.tar.bz2.part", ")",
         "-printf", "%b\\n"],
        check=True, capture_output=True, text=True,
    ).stdout.split():
        tarballs += 1
        tarball_blocks += int(line)
    packages = unreferenced = unreferenced_bytes = 0
    for child in sorted(pkgs.iterdir()):
        if child.is_symlink() or not child.is_dir() or not (child / "info").is_dir():
            continue
        packages += 1
        linked = subprocess.run(
            ["find", str(child), "!", "-type", "d", "-links", "+1", "-print", "-quit"],
            check=True, capture_output=True, text=True,
        ).stdout
        if not linked:
            unreferenced += 1
            unreferenced_bytes += du_bytes(child)
    return {
        "conda_pkgs_bytes": du_bytes(pkgs),
        "conda_pkgs_apparent_bytes": du_apparent_bytes(pkgs),
        "conda_pkgs_packages": packages,
        "conda_pkgs_tarballs": tarballs,
        "conda_pkgs_tarball_bytes": tarball_blocks * 512,
        "conda_pkgs_unreferenced_packages": unreferenced,
        "conda_pkgs_unreferenced_bytes": unreferenced_bytes,
    }
