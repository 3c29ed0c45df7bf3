"""/metrics renders a snapshot's families once: the cached text must equal a full render, every time."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client import generate_latest

from exporter.collector import ExpositionCache, build_registry
from exporter.discover import discover_root
from exporter.scanner import ScanOptions, full_scan
from exporter.snapshot import SnapshotStore
from tests.fixture_tree import build_fixture_root


def stable(text: bytes) -> list[str]:
    """The exposition without the one sample that moves with the clock."""
    return [line for line in text.decode().splitlines() if not line.startswith("conda_exporter_oldest_result_age")]


def test_cached_exposition_equals_a_full_render_across_snapshots(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    store = SnapshotStore()
    cache = ExpositionCache(store)
    full = build_registry(store)
    store.publish(full_scan([discover_root(str(root))], ScanOptions(workers=1)), "startup")
    first = cache.render()
    assert stable(first) == stable(generate_latest(full))
    assert stable(cache.render()) == stable(first)  # served from the cache

    shutil.rmtree(root / "envs" / "web")
    store.publish(full_scan([discover_root(str(root))], ScanOptions(workers=1)), "reconcile")
    second = cache.render()
    assert stable(second) == stable(generate_latest(full))
    assert 'env="web"' in first.decode() and 'env="web"' not in second.decode()
    # self-metrics are live: the scan counter moved although the cache was reused for envs
    assert 'conda_exporter_scans_total{result="success",trigger="reconcile"} 1.0' in second.decode()
