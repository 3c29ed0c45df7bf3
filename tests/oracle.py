"""Independent oracle: disk usage computed from GNU find and du output, never from exporter code."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
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


TARBALLS = (".conda", ".tar.bz2", ".conda.part", ".tar.bz2.part")
ARCHIVES = (*TARBALLS, ".conda.partial", ".tar.bz2.partial")
LEFTOVER_FILES = (".partial", ".trash", ".c~")


@dataclass(frozen=True)
class CacheShape:
    """A package cache as ``find`` lists it (paths relative to the cache): its channel/platform dirs
    (``levels``; "" is the cache dir itself) and the directories directly in them (``entries``)."""

    levels: frozenset[str]
    entries: tuple[str, ...]
    # relative path -> (find %y, %n, %b) of every path below the cache
    paths: dict[str, tuple[str, int, int]]


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def cache_shape(pkgs: Path) -> CacheShape:
    """Flat (conda) or hierarchical (mamba >= 2.6, ``pkgs/<channel...>/<platform>/<dist>/``), by what
    is on disk: a level is a non-hidden dir above a finished package (a dir with ``info/index.json``)
    or an archive, with no package dir above it, or a non-hidden dir without files (leftovers aside)
    whose name has fewer than two ``-`` (an emptied channel or platform dir) in a level."""
    out = subprocess.run(["find", str(pkgs), "-mindepth", "1", "-printf", "%y %n %b %P\\0"],
                         check=True, capture_output=True).stdout
    paths: dict[str, tuple[str, int, int]] = {}
    for item in out.split(b"\0")[:-1]:
        kind, nlink, blocks, rel = os.fsdecode(item).split(" ", 3)
        paths[rel] = (kind, int(nlink), int(blocks))
    dirs = {rel for rel, (kind, _, _) in paths.items() if kind == "d"}
    with_info = {rel.rpartition("/")[0] for rel in dirs if rel.rpartition("/")[2] == "info"}
    finished = {rel[: -len("/info/index.json")] for rel, (kind, _, _) in paths.items()
                if kind == "f" and rel.endswith("/info/index.json")}
    anchors = [rel for rel in finished if not any(a in with_info for a in _ancestors(rel))]
    anchors += [rel for rel, (kind, _, _) in paths.items() if kind == "f" and rel.endswith(ARCHIVES)]

    def may_be_level(rel: str) -> bool:
        chain = [*_ancestors(rel), rel]
        return rel != "cache" and not any(c in with_info or c.rpartition("/")[2].startswith(".") for c in chain)

    levels = {a for anchor in anchors for a in _ancestors(anchor) if may_be_level(a)}
    with_files = {a for rel, (kind, _, _) in paths.items() if kind != "d" and not rel.endswith(LEFTOVER_FILES)
                  for a in _ancestors(rel)}
    for rel in sorted(dirs, key=lambda r: r.count("/")):  # emptied levels, from the top down
        if (rel.rpartition("/")[0] in levels | {""} and may_be_level(rel) and rel not in with_files
                and rel.rpartition("/")[2].count("-") < 2):
            levels.add(rel)
    entries = tuple(sorted(rel for rel in dirs - levels if rel.rpartition("/")[0] in levels | {""}))
    return CacheShape(frozenset(levels | {""}), entries, paths)


def pkgs_oracle(pkgs: Path) -> dict[str, int]:
    """What conda clean would free, by conda's rules, from find output; in a hierarchical cache package
    dirs and archives in its channel/platform dirs count as at the top of a flat one."""
    shape = cache_shape(pkgs)
    in_level = {rel: v for rel, v in shape.paths.items() if rel.rpartition("/")[0] in shape.levels}
    tarball_blocks = tarballs = 0
    for rel, (kind, nlink, blocks) in in_level.items():
        if kind == "f" and nlink == 1 and rel.endswith(TARBALLS):
            tarballs += 1
            tarball_blocks += blocks
    packages = unreferenced = unreferenced_bytes = 0
    for entry in shape.entries:
        child = pkgs / entry
        if not (child / "info").is_dir():
            continue
        packages += 1
        linked = subprocess.run(
            ["find", str(child), "!", "-type", "d", "-links", "+1", "-print", "-quit"],
            check=True, capture_output=True, text=True,
        ).stdout
        if not linked:
            unreferenced += 1
            unreferenced_bytes += du_bytes(child)
    leftover_blocks = 0
    for entry in shape.entries:
        if entry != "cache" and not (pkgs / entry / "info" / "index.json").is_file():
            out = subprocess.run(["find", str(pkgs / entry), "-printf", "%b\\n"], check=True, capture_output=True,
                                 text=True)
            leftover_blocks += sum(int(b) for b in out.stdout.split())
    for rel, (kind, _, blocks) in in_level.items():
        if kind == "f" and rel.endswith(LEFTOVER_FILES):
            leftover_blocks += blocks
    index_cache = pkgs / "cache"
    return {
        "conda_pkgs_leftover_bytes": leftover_blocks * 512,
        "conda_pkgs_index_cache_bytes": du_bytes(index_cache) if index_cache.is_dir() else 0,
        "conda_pkgs_bytes": du_bytes(pkgs),
        "conda_pkgs_apparent_bytes": du_apparent_bytes(pkgs),
        "conda_pkgs_packages": packages,
        "conda_pkgs_tarballs": tarballs,
        "conda_pkgs_tarball_bytes": tarball_blocks * 512,
        "conda_pkgs_unreferenced_packages": unreferenced,
        "conda_pkgs_unreferenced_bytes": unreferenced_bytes,
    }


@dataclass(frozen=True)
class ContentsNumbers:
    packages: int
    untracked_bytes: int
    untracked_files: int
    copied_bytes: int
    # package cache dir -> bytes of the copies whose cache entry there, on the env's filesystem, still holds the path
    dedupable_bytes: dict[str, int] = field(default_factory=dict)


def contents_numbers(prefix: Path, pkgs_dirs: list[Path], prune: list[Path] | None = None) -> ContentsNumbers:
    """Untracked and copied files of an env from its conda-meta JSON (read here with the json module)
    and ``find -printf``, by the definitions in README's metric table."""
    owned: dict[str, dict[str, object]] = {}
    packages = 0
    for record_file in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            record = json.loads(record_file.read_bytes())
            files = record["files"]
        except (ValueError, KeyError, TypeError):
            continue
        packages += 1
        for rel in files:
            owned[rel] = record
    cmd: list[str] = ["find", str(prefix), "-xdev", "-mindepth", "1"]
    for path in prune or []:
        cmd += ["-path", str(path), "-prune", "-o"]
    cmd += ["!", "-type", "d", "-printf", "%P\\0%i\\0%n\\0%b\\0%y\\0%D\\0"]
    fields = subprocess.run(cmd, check=True, capture_output=True).stdout.split(b"\0")[:-1]
    untracked_files = 0
    untracked_inodes: dict[int, int] = {}
    copied = 0
    dedupable: dict[str, int] = {}
    for i in range(0, len(fields), 6):
        rel = os.fsdecode(fields[i])
        ino, nlink, blocks, kind = int(fields[i + 1]), int(fields[i + 2]), int(fields[i + 3]), fields[i + 4]
        dev = int(fields[i + 5])
        if rel.startswith("conda-meta/"):
            continue
        record = owned.get(rel)
        if record is None:
            untracked_files += 1
            untracked_inodes[ino] = blocks
            continue
        if kind != b"f" or nlink != 1:
            continue
        entries = record.get("paths_data", {})
        assert isinstance(entries, dict)
        if any(p.get("_path") == rel and p.get("prefix_placeholder") for p in entries.get("paths", [])):
            continue
        link = record.get("link") or {}
        assert isinstance(link, dict)
        dist = f"{record['name']}-{record['version']}-{record['build']}"
        sources = [Path(str(link["source"]))] if link.get("source") else []
        sources += [Path(str(record["extracted_package_dir"]))] if record.get("extracted_package_dir") else []
        sources += [d / dist for d in pkgs_dirs]
        if not any(s.is_dir() for s in sources):  # a hierarchical cache holds it in a channel/platform dir
            sources += [p for d in pkgs_dirs for p in sorted(d.glob(f"**/{dist}")) if (p / "info").is_dir()]
        holding = [s for s in sources if s.is_dir() and (s / rel).is_file() and not (s / rel).is_symlink()]
        if link.get("type") in (3, "copy") or holding:
            copied += blocks
        if holding and holding[0].stat().st_dev == dev:  # a hardlink to it could replace the copy
            above = [d for d in pkgs_dirs if d in holding[0].parents]
            cache = str(max(above, key=lambda d: len(d.parts)) if above else holding[0].parent)
            dedupable[cache] = dedupable.get(cache, 0) + blocks * 512
    return ContentsNumbers(
        packages=packages,
        untracked_bytes=sum(untracked_inodes.values()) * 512,
        untracked_files=untracked_files,
        copied_bytes=copied * 512,
        dedupable_bytes=dedupable,
    )


def du_total_bytes(paths: list[Path], apparent: bool = False) -> int:
    """``du -s -c -x``'s total over several trees: an inode met in two of them counts once (without
    ``apparent``), every path counts (with it, ``-b -l``)."""
    flags = ["-b", "-l"] if apparent else ["-B1"]
    out = subprocess.run(["du", "-s", "-c", "-x", *flags, *map(str, paths)], check=True, capture_output=True,
                         text=True).stdout
    return int(out.splitlines()[-1].split()[0])
