"""Oracle for what deleting envs frees: do it for real on a copy, with conda's clean rule applied by
``find``, and measure with ``du`` before and after. Never uses exporter code."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def conda_clean_packages(cache: Path) -> list[str]:
    """``conda clean --packages`` by conda's rule: remove every top-level dir holding ``info/`` none of
    whose files (non-directories) has more than one link. Returns the names removed."""
    linked = subprocess.run(
        ["find", str(cache), "-mindepth", "2", "-not", "-type", "d", "-links", "+1", "-printf", "%P\\n"],
        check=True, capture_output=True, text=True,
    ).stdout
    in_use = {line.split("/", 1)[0] for line in linked.splitlines()}
    removed = []
    for entry in sorted(cache.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or not (entry / "info").is_dir() or entry.name in in_use:
            continue
        shutil.rmtree(entry)
        removed.append(entry.name)
    return removed


def du_total(paths: Iterable[Path]) -> int:
    """``du -s -c -B1`` over ``paths``: each inode once over all of them."""
    out = subprocess.run(["du", "-s", "-c", "-B1", *map(str, paths)], check=True, capture_output=True, text=True)
    return int(out.stdout.splitlines()[-1].split()[0])


@dataclass(frozen=True)
class Deletion:
    freed_bytes: int  # du(after clean only) - du(after deleting, then clean)
    packages_removed: tuple[str, ...]  # package dirs the clean removed that clean alone would not


_CLEAN_ONLY: dict[Path, tuple[int, frozenset[str]]] = {}  # root -> du after clean alone, what it removed


def _copy(root: Path, to: Path) -> None:
    subprocess.run(["rm", "-rf", str(to)], check=True)
    subprocess.run(["cp", "-a", str(root), str(to)], check=True)


def delete_and_clean(root: Path, prefixes: Iterable[Path], work: Path) -> Deletion:
    """Copy ``root`` twice (``cp -a`` keeps hardlinks), clean one, delete ``prefixes`` (inside ``root``)
    from the other and clean it; what the difference of their ``du`` is. Caches: ``ROOT/pkgs``. The
    clean-only copy is measured once per root (the caller must not change ``root`` in between)."""
    if root not in _CLEAN_ONLY:
        clean_only = work / "clean-only"
        _copy(root, clean_only)
        alone = conda_clean_packages(clean_only / "pkgs")
        _CLEAN_ONLY[root] = (du_total([clean_only]), frozenset(alone))
        subprocess.run(["rm", "-rf", str(clean_only)], check=True)
    before, alone_removed = _CLEAN_ONLY[root]
    deleted = work / "deleted"
    _copy(root, deleted)
    for prefix in prefixes:
        shutil.rmtree(deleted / prefix.relative_to(root))
    after = conda_clean_packages(deleted / "pkgs")
    freed = before - du_total([deleted])
    subprocess.run(["rm", "-rf", str(deleted)], check=True)
    return Deletion(freed, tuple(sorted(set(after) - alone_removed)))
