"""/metrics renders a snapshot's families once: the cached text must equal a full render, every time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from prometheus_client import generate_latest

from exporter.discover.roots import discover_root
from exporter.expose.exposition import ExpositionCache, build_registry
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.fixture_tree import build_fixture_root
from tests.options import scan_options


def stable(text: bytes) -> list[str]:
    """The exposition without the one sample that moves with the clock."""
    return [line for line in text.decode().splitlines() if not line.startswith("conda_exporter_oldest_result_age")]


def test_cached_exposition_equals_a_full_render_across_snapshots(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    store = SnapshotStore()
    cache = ExpositionCache(store)
    full = build_registry(store)
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "startup")
    first = cache.render()
    assert stable(first) == stable(generate_latest(full))
    assert stable(cache.render()) == stable(first)  # served from the cache

    shutil.rmtree(root / "envs" / "web")
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "reconcile")
    second = cache.render()
    assert stable(second) == stable(generate_latest(full))
    assert 'env="web"' in first.decode() and 'env="web"' not in second.decode()
    # self-metrics are live: the scan counter moved although the cache was reused for envs
    assert 'conda_exporter_scans_total{result="success",trigger="reconcile"} 1.0' in second.decode()


def test_self_metrics_follow_every_store_change_and_the_age_follows_the_clock(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    store = SnapshotStore()
    cache = ExpositionCache(store)
    store.publish(full_scan([discover_root(str(root))], scan_options(workers=1)), "startup")
    assert "conda_exporter_events_total 0.0" in cache.render().decode()
    store.count_events(events=3)
    assert "conda_exporter_events_total 3.0" in cache.render().decode()
    store.update_watch(watch_mode="poll", watches=0)
    text = cache.render().decode()
    assert 'conda_exporter_watch_mode{mode="poll"} 1.0' in text
    assert stable(cache.render()) == stable(generate_latest(build_registry(store)))

    def age(text: bytes) -> float:
        line = next(x for x in text.decode().splitlines() if x.startswith("conda_exporter_oldest_result_age_seconds "))
        return float(line.split()[1])

    first = age(cache.render())
    assert first > 0
    deadline = time.monotonic() + 5
    while (second := age(cache.render())) == first and time.monotonic() < deadline:
        time.sleep(0.001)  # poll until the clock moves past float resolution
    assert second > first, "the age is rendered per scrape, not cached with the rest"
