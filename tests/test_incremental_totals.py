"""Incremental rescans in-process, with root and cache totals updated from the change alone.

On a small fixture nearly every change touches a sizeable share of the inodes, so the rescan would
count everything again; here that fallback is switched off, and after each operation of a random
conda/pip sequence the whole exposition must equal the find/du oracle. Targets come from the
poll-mode fingerprints, as the daemon's polling derives them.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

import exporter.account.links
import exporter.snapshot.assemble
from exporter.daemon.incremental import rediscover, rescan
from exporter.daemon.targets import Target, fingerprints, watch_specs
from exporter.discover.roots import RootLayout, discover_root
from exporter.expose.exposition import ExpositionCache
from exporter.model import Snapshot
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.condaops import mismatches, random_operation
from tests.fixture_tree import build_fixture_root
from tests.options import scan_options

OPTIONS = scan_options(workers=1)


def exposition(snapshot: Snapshot) -> str:
    store = SnapshotStore()
    store.publish(snapshot, "event")
    return ExpositionCache(store).render().decode()


def changed_targets(
    before: dict[Target, tuple[tuple[int, int], ...]], after: dict[Target, tuple[tuple[int, int], ...]]
) -> set[Target]:
    changed = {t for t, stamp in after.items() if before.get(t) != stamp}
    changed |= {Target("root", t.root, t.root) for t in set(before) - set(after)}
    return changed


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_random_operations_keep_every_number_equal_to_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", 0)  # never count everything again
    updated: list[bool] = []
    real_root_distinct = exporter.snapshot.assemble._updated_root_bytes

    def spy(*args: object) -> int | None:
        result = real_root_distinct(*args)  # type: ignore[arg-type]
        updated.append(result is not None)
        return result

    monkeypatch.setattr(exporter.snapshot.assemble, "_updated_root_bytes", spy)
    root = build_fixture_root(tmp_path / "conda")
    layouts: dict[str, RootLayout] = {str(root): discover_root(str(root))}
    snapshot = full_scan(list(layouts.values()), OPTIONS)
    rng = random.Random(seed)
    counter = [0]
    done: list[str] = []
    for _ in range(10):
        prints = fingerprints(watch_specs(layouts.values()).values())
        done.append(random_operation(rng, root, counter))
        targets = changed_targets(prints, fingerprints(watch_specs(layouts.values()).values()))
        layouts = rediscover(targets, [str(root)], layouts, lambda r, _layouts: discover_root(r))
        snapshot = rescan(snapshot, targets, roots=[str(root)], layouts=layouts, options=OPTIONS,
                          started=time.monotonic()).snapshot
        assert mismatches(exposition(snapshot), root) == [], done
        # what deleting envs frees depends on every tree: after the change it must be what a fresh scan says
        fresh = full_scan(list(layouts.values()), OPTIONS).reclaim
        assert replace(snapshot.reclaim, evaluated_at=0) == replace(fresh, evaluated_at=0), done
    # most changes (not env creation in the middle of the order) took the update-from-the-change path
    assert sum(updated) >= len(updated) // 2, updated


@pytest.mark.parametrize("reuse_limit", [0, exporter.account.links.REUSE_LIMIT], ids=["from-the-change", "default"])
def test_a_file_deleted_by_hand_frees_its_cache_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      reuse_limit: int) -> None:
    """An env loses its link to a cache file outside conda (rm, or pip overwriting it): the cache is
    not walked again (no package came or went), yet its total must follow."""
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", reuse_limit)
    root = build_fixture_root(tmp_path / "conda")
    layouts: dict[str, RootLayout] = {str(root): discover_root(str(root))}
    snapshot = full_scan(list(layouts.values()), OPTIONS)
    cache_inodes = {p.lstat().st_ino for p in (root / "pkgs").rglob("*") if p.is_file()}
    victim = next(p for p in sorted((root / "envs").rglob("*"))
                  if p.is_file() and not p.is_symlink() and p.lstat().st_nlink == 2
                  and p.lstat().st_ino in cache_inodes and p.lstat().st_blocks)
    env = root / "envs" / victim.relative_to(root / "envs").parts[0]
    victim.unlink()
    targets = {Target("env", str(env), str(root))}
    layouts = rediscover(targets, [str(root)], layouts, lambda r, _layouts: discover_root(r))
    snapshot = rescan(snapshot, targets, roots=[str(root)], layouts=layouts, options=OPTIONS,
                      started=time.monotonic()).snapshot
    assert mismatches(exposition(snapshot), root) == [], victim
