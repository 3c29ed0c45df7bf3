"""Oracle for what deleting envs frees: do it for real on a copy, with conda's clean rule applied by
``find``, and measure with ``du`` before and after. Never uses exporter code."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.oracle import cache_shape


def conda_clean_packages(cache: Path) -> list[str]:
    """``conda clean --packages`` by conda's rule: remove every package dir (holding ``info/``; at the top,
    or in a channel/platform dir of a hierarchical cache, see :func:`tests.oracle.cache_shape`) none of
    whose files (non-directories) has more than one link. Returns the paths removed, relative to the
    cache (a flat cache's: the names)."""
    shape = cache_shape(cache)
    linked = subprocess.run(
        ["find", str(cache), "-mindepth", "2", "-not", "-type", "d", "-links", "+1", "-printf", "%P\\n"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    removed = []
    for entry in shape.entries:
        path = cache / entry
        if not (path / "info").is_dir() or any(line.startswith(entry + "/") for line in linked):
            continue
        shutil.rmtree(path)
        removed.append(entry)
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
