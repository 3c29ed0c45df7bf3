"""Independent oracle for disk usage on a reflink filesystem: ``find -printf`` for inodes and hardlinks,
``filefrag -v -b1`` (e2fsprogs' FIEMAP client) for each regular file's extents and their ``shared`` flag.
Never uses exporter code.

Physical extents are turned into sets of filesystem blocks (Python sets of block numbers), so every
"count once" below is a set union, not the exporter's sweep over sorted boundaries. The definitions:

* an inode's *own* bytes are ``st_blocks * 512`` less the bytes of its extents flagged shared;
* a tree's *reflinked* bytes are the blocks its single-link files reference through a shared extent (the
  files an installer reflinked; a hardlinked file whose data is also reflinked elsewhere is a hardlink);
* a block is a tree's *own* when at least two references to it were seen, all from inodes whose every
  link lies in the tree; any other shared block is *shared* (a single reference means something unseen
  holds the other one);
* unique = own bytes of the tree's private inodes (all links inside; directories) + its own blocks;
  shared = own bytes of its other inodes + its reflinked blocks that are not its own;
* the bytes of several trees together: own bytes of each inode once, plus every shared block once.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

EXTENT_LINE = re.compile(
    r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+):\s+(?:(\d+):\s+)?(\S*)\s*$"
)
HEADER = re.compile(r"^File size of (.*) is \d+ \(\d+ blocks? of 1 bytes\)$")
FILEFRAG_BATCH = 200


@dataclass
class Inode:
    """One inode as ``find`` and ``filefrag`` see it: 512-byte blocks, links, and the filesystem blocks
    of its extents flagged shared (one entry per reference: an extent the file maps twice counts twice)."""

    blocks: int
    nlink: int
    is_dir: bool
    size: int
    shared: Counter[tuple[int, int]] = field(default_factory=Counter)  # (dev, block) -> times mapped
    shared_bytes: int = 0
    paths: list[str] = field(default_factory=list)

    def own_bytes(self) -> int:
        return max(self.blocks * 512 - self.shared_bytes, 0)

    @property
    def links(self) -> int:
        """Names the inode has: ``st_nlink``, but for a directory its one name (its ``st_nlink`` counts
        its subdirectories' ``..``)."""
        return len(self.paths) if self.is_dir else self.nlink


@dataclass(frozen=True)
class TreeFigures:
    unique_bytes: int
    shared_bytes: int
    reflinked_bytes: int
    apparent_bytes: int
    files: int
    hardlinked_files: int


def _shared_extents(paths: list[str], block: int) -> dict[str, tuple[Counter[int], int]]:
    """``filefrag -v -b1`` of ``paths``: per path, the blocks of its extents flagged shared (without an
    unknown place, delayed allocation or encoding, as those are counted as du counts them) and their bytes."""
    found: dict[str, tuple[Counter[int], int]] = {}
    for i in range(0, len(paths), FILEFRAG_BATCH):
        out = subprocess.run(["filefrag", "-v", "-b1", *paths[i : i + FILEFRAG_BATCH]], check=True,
                             capture_output=True, text=True).stdout
        current: str | None = None
        for line in out.splitlines():
            header = HEADER.match(line)
            if header:
                current = header.group(1)
                found[current] = (Counter(), 0)
                continue
            match = EXTENT_LINE.match(line)
            if not match or current is None:
                continue
            flags = set(match.group(7).split(","))
            if "shared" not in flags or flags & {"unknown_loc", "delalloc", "encoded", "inline", "not_aligned"}:
                continue
            start, end = int(match.group(3)), int(match.group(4)) + 1
            assert start % block == 0 and end % block == 0, f"{current}: extent {start}..{end} not block-aligned"
            blocks, size = found[current]
            blocks.update(range(start // block, end // block))
            found[current] = (blocks, size + end - start)
    return found


def scan(top: Path, prune: list[Path] | None = None) -> dict[tuple[int, int], Inode]:
    """Every inode under ``top`` (itself included; not following symlinks, not leaving its filesystem,
    ``prune`` dirs left out), with the paths found, and each regular file's shared extents."""
    cmd: list[str] = ["find", str(top), "-xdev"]
    for pruned in prune or []:
        cmd += ["-path", str(pruned), "-prune", "-o"]
    cmd += ["-printf", "%D %i %n %b %s %y %p\\0"]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    inodes: dict[tuple[int, int], Inode] = {}
    regular: dict[tuple[int, int], str] = {}
    for item in out.split(b"\0")[:-1]:
        dev, ino, nlink, blocks, size, kind, path = os.fsdecode(item).split(" ", 6)
        key = (int(dev), int(ino))
        inode = inodes.setdefault(key, Inode(int(blocks), int(nlink), kind == "d", int(size)))
        inode.paths.append(path)
        if kind == "f":
            regular.setdefault(key, path)
    block = os.statvfs(top).f_bsize
    extents = _shared_extents(sorted(regular.values()), block)
    for key, name in regular.items():
        mapped, mapped_bytes = extents.get(name, (Counter(), 0))
        inodes[key].shared = Counter({(key[0], b): n for b, n in mapped.items()})
        inodes[key].shared_bytes = mapped_bytes
    return inodes


def block_size(top: Path) -> int:
    return os.statvfs(top).f_bsize


class Root:
    """All inodes of a root (one ``scan`` of it) and which tree each path belongs to."""

    def __init__(self, root: Path, trees: dict[str, tuple[Path, list[Path]]]) -> None:
        """``trees``: name -> (top, pruned dirs); every path of ``root`` lies in exactly one tree."""
        self.block = block_size(root)
        self.inodes = scan(root)
        self.trees = trees
        self.members: dict[str, dict[tuple[int, int], int]] = {}  # tree -> inode -> links found in it
        for name, (top, prune) in trees.items():
            found: Counter[tuple[int, int]] = Counter()
            for key, inode in self.inodes.items():
                for path in inode.paths:
                    if _inside(path, top, prune):
                        found[key] += 1
            self.members[name] = dict(found)
        # references to each shared block: (inode, times it maps the block)
        self.refs: dict[tuple[int, int], list[tuple[tuple[int, int], int]]] = {}
        for key, inode in self.inodes.items():
            for b, times in inode.shared.items():
                self.refs.setdefault(b, []).append((key, times))

    def _private(self, name: str, key: tuple[int, int]) -> bool:
        inode = self.inodes[key]
        return inode.is_dir or self.members[name].get(key, 0) >= inode.nlink

    def tree(self, name: str) -> TreeFigures:
        members = self.members[name]
        unique = shared = apparent = files = hardlinked = 0
        blocks: set[tuple[int, int]] = set()
        reflinked: set[tuple[int, int]] = set()
        for key, links in members.items():
            inode = self.inodes[key]
            apparent += inode.size * links
            if not inode.is_dir:
                files += links
                hardlinked += links if inode.nlink > 1 else 0
            if self._private(name, key):
                unique += inode.own_bytes()
            else:
                shared += inode.own_bytes()
            blocks |= set(inode.shared)
            if inode.nlink == 1:
                reflinked |= set(inode.shared)
        own = {b for b in blocks if self._own(name, b)}
        return TreeFigures(
            unique_bytes=unique + len(own) * self.block,
            shared_bytes=shared + len(blocks - own) * self.block,
            reflinked_bytes=len(reflinked) * self.block,
            apparent_bytes=apparent,
            files=files,
            hardlinked_files=hardlinked,
        )

    def _own(self, name: str, b: tuple[int, int]) -> bool:
        refs = self.refs[b]
        return sum(times for _, times in refs) >= 2 and all(
            key in self.members[name] and self._private(name, key) for key, _ in refs
        )

    def total(self, names: list[str] | None = None) -> int:
        """Bytes of the trees ``names`` (all of them by default) together: each inode's own bytes once,
        each shared block once."""
        keys = {k for n in (names or list(self.trees)) for k in self.members[n]}
        blocks = {b for k in keys for b in self.inodes[k].shared}
        return sum(self.inodes[k].own_bytes() for k in keys) + len(blocks) * self.block

    def clean_alone_bytes(self, package_dirs: list[Path]) -> int:
        """What removing the package dirs ``package_dirs`` (conda clean's unreferenced ones) frees: own bytes
        of the inodes with every link inside them, and the shared blocks every seen reference to which,
        at least two, lies in such inodes."""
        inside = {k for k, inode in self.inodes.items()
                  if all(any(_inside(p, d, []) for d in package_dirs) for p in inode.paths)
                  and len(inode.paths) >= inode.links}
        blocks = {b for k in inside for b in self.inodes[k].shared}
        freed_blocks = [b for b in blocks
                        if sum(t for _, t in self.refs[b]) >= 2 and all(k in inside for k, _ in self.refs[b])]
        return sum(self.inodes[k].own_bytes() for k in inside) + len(freed_blocks) * self.block

    def reclaimable(self, names: list[str], cache: Path) -> int:
        """What deleting the trees ``names`` and then cleaning ``cache`` (a flat one) by conda's rule frees,
        beyond what that clean alone frees: removal simulated on the inodes and shared blocks found."""
        return self._freed(names, cache) - self._freed([], cache)

    def _freed(self, names: list[str], cache: Path) -> int:
        removed: Counter[tuple[int, int]] = Counter()
        for name in names:
            removed.update(self.members[name])
        left = {k: inode.links - removed.get(k, 0) for k, inode in self.inodes.items()}
        for entry in sorted(cache.iterdir()):
            if not (entry / "info").is_dir() or entry.is_symlink():
                continue
            inside = {k: n for k, n in self._links_below(entry).items() if left[k] > 0}
            if any(left[k] > 1 for k, inode in self.inodes.items() if k in inside and not inode.is_dir):
                continue  # a file with a second link: conda keeps the package
            for k, n in inside.items():
                left[k] -= n
        gone = {k for k, n in left.items() if n <= 0}
        blocks = {b for k in gone for b in self.inodes[k].shared}
        freed_blocks = [b for b in blocks
                        if sum(t for _, t in self.refs[b]) >= 2 and all(k in gone for k, _ in self.refs[b])]
        return sum(self.inodes[k].own_bytes() for k in gone) + len(freed_blocks) * self.block

    def _links_below(self, top: Path) -> Counter[tuple[int, int]]:
        found: Counter[tuple[int, int]] = Counter()
        for key, inode in self.inodes.items():
            found[key] += sum(1 for path in inode.paths if _inside(path, top, []))
        return Counter({k: n for k, n in found.items() if n})

    def shared_bytes_of(self, path: Path) -> int:
        """Bytes of the extents flagged shared of the file at ``path``."""
        st = path.lstat()
        return self.inodes[(st.st_dev, st.st_ino)].shared_bytes


def _inside(path: str, top: Path, prune: list[Path]) -> bool:
    top_s = str(top)
    if path != top_s and not path.startswith(top_s + "/"):
        return False
    return not any(path == str(p) or path.startswith(f"{p}/") for p in prune)


def unreferenced_package_dirs(pkgs: Path) -> list[Path]:
    """conda's rule, for a flat cache: package dirs (holding ``info/``) none of whose files has two links."""
    found = []
    for entry in sorted(pkgs.iterdir()):
        if not entry.is_dir() or entry.is_symlink() or not (entry / "info").is_dir():
            continue
        linked = subprocess.run(["find", str(entry), "!", "-type", "d", "-links", "+1", "-print", "-quit"],
                                check=True, capture_output=True, text=True).stdout
        if not linked:
            found.append(entry)
    return found
