"""/metrics serves a body rendered and compressed once per change: it must equal a full render, byte
for byte, every time, and stay the same bytes until the store changes."""

from __future__ import annotations

import gc
import gzip
import shutil
import threading
import time
import weakref
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporter.discover.roots import discover_root
from exporter.expose.exposition import ExpositionCache, build_registry
from exporter.expose.self_metrics import OLDEST_RESULT
from exporter.model import Snapshot
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.exposition import samples
from tests.fixture_tree import build_fixture_root
from tests.options import scan_options


@pytest.fixture
def scanned(tmp_path: Path) -> tuple[Path, SnapshotStore]:
    root = build_fixture_root(tmp_path / "conda")
    store = SnapshotStore()
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "startup")
    return root, store


def test_cached_exposition_equals_a_full_render_across_snapshots(scanned: tuple[Path, SnapshotStore]) -> None:
    root, store = scanned
    cache = ExpositionCache(store)
    full = build_registry(store)
    first = cache.render()
    assert first == generate_latest(full)
    assert cache.render() is first  # served from the cache, not rendered again
    assert gzip.decompress(cache.render(gzip=True)) == first

    shutil.rmtree(root / "envs" / "web")
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "reconcile")
    second = cache.render()
    assert second == generate_latest(full)
    assert gzip.decompress(cache.render(gzip=True)) == second
    assert 'env="web"' in first.decode() and 'env="web"' not in second.decode()
    # self-metrics are live: the scan counter moved although the cache was reused for envs
    assert 'conda_exporter_scans_total{result="success",trigger="reconcile"} 1.0' in second.decode()


def test_self_metrics_follow_every_store_change(scanned: tuple[Path, SnapshotStore]) -> None:
    _, store = scanned
    cache = ExpositionCache(store)
    assert "conda_exporter_events_total 0.0" in cache.render().decode()
    packed = cache.render(gzip=True)
    store.count_events(events=3)
    assert "conda_exporter_events_total 3.0" in cache.render().decode()
    assert cache.render(gzip=True) != packed
    assert gzip.decompress(cache.render(gzip=True)) == cache.render()
    store.update_watch(watch_mode="poll", watches=0)
    text = cache.render().decode()
    assert 'conda_exporter_watch_mode{mode="poll"} 1.0' in text
    assert cache.render() == generate_latest(build_registry(store))


def test_between_changes_the_bytes_do_not_move_with_the_clock(scanned: tuple[Path, SnapshotStore]) -> None:
    _, store = scanned
    cache = ExpositionCache(store)
    plain, packed = cache.render(), cache.render(gzip=True)
    started = time.time()
    while time.time() - started < 0.05:
        time.sleep(0.005)
    assert cache.render() == plain and cache.render(gzip=True) == packed
    assert ExpositionCache(store).render(gzip=True) == packed  # deterministic gzip: no mtime, same level


def test_oldest_result_is_the_least_recent_env_scan_time(scanned: tuple[Path, SnapshotStore]) -> None:
    _, store = scanned
    text = ExpositionCache(store).render().decode()
    scanned_at = samples(text)["conda_env_last_scan_timestamp_seconds"].values()
    assert samples(text)[OLDEST_RESULT] == {(): min(scanned_at)}


def test_without_envs_the_oldest_result_has_no_sample() -> None:
    store = SnapshotStore()
    cache = ExpositionCache(store)
    before_any_scan = cache.render().decode()
    store.publish(Snapshot(roots=(), envs=(), pkgs=(), completed_at=time.time(), duration_seconds=0.0), "startup")
    no_envs = cache.render().decode()
    for text in (before_any_scan, no_envs):
        assert f"# TYPE {OLDEST_RESULT} gauge" in text
        assert OLDEST_RESULT not in samples(text)
    assert "conda_exporter_envs 0.0" in no_envs


def test_scrapes_during_a_render_serve_the_previous_body(scanned: tuple[Path, SnapshotStore]) -> None:
    _, store = scanned
    cache = ExpositionCache(store)
    old_plain, old_packed = cache.render(), cache.render(gzip=True)
    entered, release = threading.Event(), threading.Event()
    render = cache._render

    def slow_render(version: int) -> object:
        entered.set()
        assert release.wait(10)
        return render(version)

    cache._render = slow_render  # type: ignore[assignment,method-assign]
    store.count_events(events=1)
    renderer = threading.Thread(target=cache.render)
    renderer.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert cache.render() is old_plain and cache.render(gzip=True) is old_packed  # no wait for the render
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        renderer.join(10)
    new = cache.render()
    assert new != old_plain and "conda_exporter_events_total 1.0" in new.decode()
    assert gzip.decompress(cache.render(gzip=True)) == new


def test_a_replaced_snapshot_is_not_kept_alive_by_the_cache(scanned: tuple[Path, SnapshotStore]) -> None:
    """The cache remembers which snapshot its text is of without holding it: the snapshot a scan replaced is
    freed at once, not at the next scrape (on a tree of millions of paths, tens of MiB of inode tables)."""
    root, store = scanned
    cache = ExpositionCache(store)
    cache.render()
    assert store.snapshot is not None
    old = weakref.ref(store.snapshot)
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "reconcile")
    gc.collect()
    assert old() is None  # nothing holds it now that the store has moved on
    assert cache.render() == generate_latest(build_registry(store))  # and the new one is rendered
