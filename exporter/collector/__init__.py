"""Expose step: one prometheus_client collector per concern, each rendering the latest Snapshot.

Collectors never scan and never block on a scan: they read the immutable Snapshot that the
SnapshotStore holds at the moment of the scrape.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.collector.contents import ContentsCollector
from exporter.collector.env import EnvCollector
from exporter.collector.exporter import ExporterCollector
from exporter.collector.pkgs import PkgsCollector
from exporter.collector.root import RootCollector
from exporter.snapshot import SnapshotStore

__all__ = ["ExpositionCache", "build_registry"]


def _registry(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def _snapshot_collectors(store: SnapshotStore) -> tuple[Collector, ...]:
    return EnvCollector(store), ContentsCollector(store), PkgsCollector(store), RootCollector(store)


def build_registry(store: SnapshotStore) -> CollectorRegistry:
    """A registry holding our collectors only (no process/platform collectors: the exposition is ours)."""
    return _registry(*_snapshot_collectors(store), ExporterCollector(store))


class ExpositionCache:
    """The text exposition, with the snapshot's part rendered once per snapshot.

    A snapshot never changes once published, so its families (all but the exporter's self-metrics)
    are rendered when it is first scraped and reused until the next one; only the small self-metrics
    are rendered per scrape. With hundreds of envs and many scrapers at once, rendering everything per
    scrape under the GIL is what made /metrics slow.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._snapshot_registry = _registry(*_snapshot_collectors(store))
        self._self_registry = _registry(ExporterCollector(store))
        self._cached: tuple[object, bytes] = (object(), b"")

    def render(self) -> bytes:
        """The whole exposition (text format 0.0.4) as of now."""
        snapshot = self._store.snapshot
        key, text = self._cached
        if key is not snapshot:
            text = generate_latest(self._snapshot_registry)
            self._cached = (snapshot, text)  # a race renders twice, harmlessly: both texts are equal
        return text + generate_latest(self._self_registry)
