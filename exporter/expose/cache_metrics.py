"""Per-package-cache metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.discover.roots import label_value
from exporter.expose.families import Definitions, gauge_families
from exporter.model import PkgsUsage
from exporter.snapshot.store import SnapshotStore

LABELS = ("root", "pkgs_dir")

DEDUPABLE = "conda_pkgs_dedupable_bytes"
DEDUPABLE_HELP = (
    "Allocated bytes of env files installed as copies of files this cache still holds: what re-linking "
    "them to the cache would save."
)

METRICS: Definitions[PkgsUsage] = {
    "conda_pkgs_bytes": (
        "Allocated bytes of the whole package cache directory, each inode once (du -s).",
        lambda p: p.bytes,
    ),
    "conda_pkgs_apparent_bytes": (
        "Sum of st_size over every path of the package cache, every link counted.",
        lambda p: p.apparent_bytes,
    ),
    "conda_pkgs_packages": (
        "Extracted package directories (top-level dirs holding info/) in the cache.",
        lambda p: p.packages,
    ),
    "conda_pkgs_tarball_bytes": (
        "Allocated bytes of package archives (.conda, .tar.bz2, .part) with one link: what "
        "'conda clean --tarballs' frees.",
        lambda p: p.tarball_bytes,
    ),
    "conda_pkgs_tarballs": (
        "Package archives that 'conda clean --tarballs' would remove.",
        lambda p: p.tarballs,
    ),
    "conda_pkgs_index_cache_bytes": (
        "Allocated bytes of downloaded repodata in the cache's cache/ dir: what 'conda clean --index-cache' frees.",
        lambda p: p.index_cache_bytes,
    ),
    "conda_pkgs_leftover_bytes": (
        "Allocated bytes of extractions that never finished (top-level dirs without info/index.json) and "
        "of interrupted downloads and trash (.partial, .trash, .c~ files).",
        lambda p: p.leftover_bytes,
    ),
    "conda_pkgs_unreferenced_bytes": (
        "Allocated bytes of extracted packages none of whose files has a second link: what "
        "'conda clean --packages' frees.",
        lambda p: p.unreferenced_bytes,
    ),
    "conda_pkgs_unreferenced_packages": (
        "Extracted packages linked into no env, as 'conda clean --packages' decides.",
        lambda p: p.unreferenced_packages,
    ),
}


def cache_labels(cache: PkgsUsage) -> tuple[str, str]:
    return label_value(cache.root), label_value(cache.path)


class PkgsCollector(Collector):
    """Renders one gauge per package cache and metric from the latest snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._store.snapshot
        caches = snapshot.pkgs if snapshot else ()
        yield from gauge_families(METRICS, caches, LABELS, cache_labels)
        dedupable: dict[str, int] = {}
        for env in snapshot.envs if snapshot else ():
            for pkgs_dir, size in env.contents.dedupable:
                dedupable[pkgs_dir] = dedupable.get(pkgs_dir, 0) + size
        family = GaugeMetricFamily(DEDUPABLE, DEDUPABLE_HELP, labels=LABELS)
        for cache in caches:
            family.add_metric(cache_labels(cache), dedupable.get(cache.path, 0))
        yield family
