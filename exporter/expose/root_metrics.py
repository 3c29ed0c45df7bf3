"""Per-root (conda installation) metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.discover.roots import label_value
from exporter.expose.families import Definitions, gauge_families
from exporter.model import RootUsage
from exporter.snapshot.store import SnapshotStore

LABELS = ("root",)

METRICS: Definitions[RootUsage] = {
    "conda_root_bytes": (
        "Allocated bytes of the whole installation, each inode once: its true disk cost (du -s).",
        lambda r: r.bytes,
    ),
    "conda_root_apparent_bytes": (
        "Sum of st_size over every path of the installation: its cost if nothing were hardlinked.",
        lambda r: r.apparent_bytes,
    ),
    "conda_root_envs": (
        "Environments found in the root, base included.",
        lambda r: r.envs,
    ),
    "conda_root_ignored_dirs": (
        "Directories in envs/ that are not environments (no conda-meta/) and were not counted as envs.",
        lambda r: r.ignored_dirs,
    ),
    "conda_root_filesystem_size_bytes": (
        "Size of the filesystem holding the root.",
        lambda r: r.filesystem_size_bytes,
    ),
    "conda_root_filesystem_avail_bytes": (
        "Bytes available to unprivileged users on the filesystem holding the root.",
        lambda r: r.filesystem_avail_bytes,
    ),
}


class RootCollector(Collector):
    """Renders one gauge per root and metric from the latest snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._store.snapshot
        yield from gauge_families(METRICS, snapshot.roots if snapshot else (), LABELS, lambda r: (label_value(r.path),))
