"""Per-environment metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.expose.families import Definitions, gauge_families
from exporter.expose.record_metrics import env_labels
from exporter.model import EnvUsage
from exporter.snapshot.store import SnapshotStore

LABELS = ("root", "env", "prefix")

# name -> (help, value of one env)
METRICS: Definitions[EnvUsage] = {
    "conda_env_unique_bytes": (
        "Allocated bytes of inodes whose every link lies inside the env, less data they share by reflink "
        "with files outside it: what deleting the env frees.",
        lambda e: e.usage.unique_bytes,
    ),
    "conda_env_shared_bytes": (
        "Allocated bytes of inodes under the env that also have links outside it, each inode once, and of "
        "data its files share by reflink with others, each byte once.",
        lambda e: e.usage.shared_bytes,
    ),
    "conda_env_apparent_bytes": (
        "Sum of st_size over every path of the env, every link counted (du -s -b -l).",
        lambda e: e.usage.apparent_bytes,
    ),
    "conda_env_files": (
        "Non-directory paths in the env (regular files and symlinks).",
        lambda e: e.usage.files,
    ),
    "conda_env_hardlinked_files": (
        "Non-directory paths in the env whose inode has more than one link.",
        lambda e: e.usage.hardlinked_files,
    ),
    "conda_env_scan_errors": (
        "Paths that could not be read during the env's last scan; non-zero means its numbers are partial.",
        lambda e: len(e.usage.errors),
    ),
    "conda_env_last_scan_timestamp_seconds": (
        "Unix time at which the env's numbers were last computed.",
        lambda e: e.scanned_at,
    ),
}


class EnvCollector(Collector):
    """Renders one gauge per env and metric from the latest snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._store.snapshot
        yield from gauge_families(METRICS, snapshot.envs if snapshot else (), LABELS, env_labels)
