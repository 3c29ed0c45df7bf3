"""Expose stage, the exposition: one prometheus_client collector per concern, rendered from the latest Snapshot.

Collectors never scan and never block on a scan: they read the immutable Snapshot that the
SnapshotStore holds at the moment of the scrape.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.expose.cache_metrics import PkgsCollector
from exporter.expose.env_metrics import EnvCollector
from exporter.expose.gzipstream import GzipPrefix, compress_prefix, finish
from exporter.expose.reclaim_metrics import ReclaimCollector
from exporter.expose.record_metrics import ContentsCollector
from exporter.expose.root_metrics import RootCollector
from exporter.expose.self_metrics import OLDEST_AGE, ExporterCollector, ResultAgeCollector, oldest_result_age
from exporter.snapshot.store import SnapshotStore

__all__ = ["ExpositionCache", "build_registry"]


def _registry(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def _snapshot_collectors(store: SnapshotStore) -> tuple[Collector, ...]:
    return (
        EnvCollector(store),
        ContentsCollector(store),
        ReclaimCollector(store),
        PkgsCollector(store),
        RootCollector(store),
    )


def build_registry(store: SnapshotStore) -> CollectorRegistry:
    """A registry holding our collectors only (no process/platform collectors: the exposition is ours)."""
    return _registry(*_snapshot_collectors(store), ExporterCollector(store), ResultAgeCollector(store))


class ExpositionCache:
    """The text exposition, rendered once per change of the store.

    A snapshot never changes once published, so its families (all but the exporter's self-metrics)
    are rendered when it is first scraped and reused until the next one; the self-metrics are
    rendered again only when ``store.version`` moves (and compressed once then, for gzip); only the
    age of the oldest result, which moves with the clock, is formatted per scrape. With hundreds of
    envs and many scrapers at once, rendering per scrape under the GIL is what made /metrics slow.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._snapshot_registry = _registry(*_snapshot_collectors(store))
        self._self_registry = _registry(ExporterCollector(store))
        # The age's HELP and TYPE lines, rendered once; per scrape only its sample line is formatted
        # (a registry render per scrape was a third of a scrape's CPU).
        age_text = generate_latest(_registry(ResultAgeCollector(store))).decode()
        self._age_header = "".join(line + "\n" for line in age_text.splitlines() if line.startswith("#")).encode()
        self._cached: tuple[object, bytes] = (object(), b"")
        # (store version, snapshot and self-metrics text, its gzip prefix)
        self._cached_self: tuple[int, bytes, GzipPrefix] = (-1, b"", compress_prefix(b""))
        # One render at a time. While it runs, the other scrapes serve the previous text (a complete
        # exposition of the previous snapshot, at most one render old) instead of all waiting for it or
        # all rendering it at once under the GIL: with hundreds of envs a render takes tens of ms.
        self._render_lock = threading.Lock()

    def render(self, gzip: bool = False) -> bytes:
        """The whole exposition (as ``generate_latest`` writes it) as of now, or as of the previous
        change while another thread is rendering the latest one; a gzip member of it with ``gzip``."""
        version = self._store.version  # before rendering: a change meanwhile renders again next time
        cached = self._cached_self
        if cached[0] != version and self._render_lock.acquire(blocking=cached[0] < 0):
            try:
                cached = self._cached_self
                if cached[0] != version:  # not rendered by the scrape we waited for
                    snapshot = self._store.snapshot
                    key, text = self._cached
                    if key is not snapshot:
                        text = generate_latest(self._snapshot_registry)
                        self._cached = (snapshot, text)
                    self_text = text + generate_latest(self._self_registry)
                    cached = (version, self_text, compress_prefix(self_text))
                    self._cached_self = cached
            finally:
                self._render_lock.release()
        age: str = floatToGoString(oldest_result_age(self._store, time.time()))  # type: ignore[no-untyped-call]
        tail = self._age_header + f"{OLDEST_AGE} {age}\n".encode()
        return finish(cached[2], tail) if gzip else cached[1] + tail
