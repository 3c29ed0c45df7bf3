"""Expose step: one prometheus_client collector per concern, each rendering the latest Snapshot.

Collectors never scan and never block on a scan: they read the immutable Snapshot that the
SnapshotStore holds at the moment of the scrape.
"""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

from exporter.collector.contents import ContentsCollector
from exporter.collector.env import EnvCollector
from exporter.collector.exporter import ExporterCollector
from exporter.collector.pkgs import PkgsCollector
from exporter.collector.root import RootCollector
from exporter.snapshot import SnapshotStore

__all__ = ["build_registry"]


def build_registry(store: SnapshotStore) -> CollectorRegistry:
    """A registry holding our collectors only (no process/platform collectors: the exposition is ours)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (
        EnvCollector(store),
        ContentsCollector(store),
        PkgsCollector(store),
        RootCollector(store),
        ExporterCollector(store),
    ):
        registry.register(collector)
    return registry
