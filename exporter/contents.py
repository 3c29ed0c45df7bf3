"""Account an env's contents by conda's records: untracked files, copies, and what relinking saves.

Works on a walk made with the env's owned paths (``walk_tree(..., owned=...)``) and the env's
:class:`~exporter.condameta.EnvMetadata`. Deciding whether a single-link file is a copy costs one
``lstat`` of its cache entry; only owned single-link regular files are checked, which in an env
installed by hardlinks are few.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from exporter.account import BLOCK_SIZE
from exporter.condameta import EnvMetadata, PackageRecord
from exporter.snapshot import EnvContents
from exporter.walk import TreeWalk

__all__ = ["account_contents"]


def _cache_entry(record: PackageRecord, pkgs_dirs: Sequence[str]) -> str | None:
    """The extracted package dir the record came from, if it still exists."""
    candidates = [record.source] if record.source else []
    candidates += [os.path.join(d, record.dist) for d in pkgs_dirs]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    return None


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def account_contents(walk: TreeWalk, meta: EnvMetadata, pkgs_dirs: Sequence[str]) -> EnvContents:
    """Untracked/copied/dedupable bytes of one env (see :class:`~exporter.snapshot.EnvContents`)."""
    owned = meta.owned_paths()
    entries: dict[str, str | None] = {}
    copied_blocks = 0
    dedupable: dict[str, int] = {}
    for rel, blocks in walk.owned_single_links:
        record = owned[rel]
        if rel in record.relocated:
            continue
        if record.dist not in entries:
            entries[record.dist] = _cache_entry(record, pkgs_dirs)
        entry = entries[record.dist]
        still_cached = entry is not None and _is_regular_file(os.path.join(entry, rel))
        if record.link_type == "copy" or still_cached:
            copied_blocks += blocks
        if still_cached and entry is not None:
            cache = os.path.dirname(entry)
            dedupable[cache] = dedupable.get(cache, 0) + blocks * BLOCK_SIZE
    return EnvContents(
        packages=len(meta.packages),
        untracked_bytes=walk.untracked_blocks * BLOCK_SIZE,
        untracked_files=walk.untracked_files,
        copied_bytes=copied_blocks * BLOCK_SIZE,
        dedupable=tuple(sorted(dedupable.items())),
        owner=meta.owner,
        python_version=meta.python_version,
        last_transaction=meta.last_transaction,
    )
