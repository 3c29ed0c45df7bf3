"""Expose stage, the exposition: one prometheus_client collector per concern, rendered from the latest Snapshot.

Collectors never scan and never block on a scan: they read the immutable Snapshot that the
SnapshotStore holds at the moment of the scrape.
"""

from __future__ import annotations

import struct
import threading
import weakref
import zlib
from dataclasses import dataclass
from functools import cached_property

from prometheus_client import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.expose.cache_metrics import PkgsCollector
from exporter.expose.env_metrics import EnvCollector
from exporter.expose.reclaim_metrics import ReclaimCollector
from exporter.expose.record_metrics import ContentsCollector
from exporter.expose.root_metrics import RootCollector
from exporter.expose.self_metrics import ExporterCollector
from exporter.model import Snapshot
from exporter.snapshot.store import SnapshotStore

__all__ = ["Body", "ExpositionCache", "RenderCache", "build_registry"]

GZIP_LEVEL = 6
"""zlib's default: a 300-env exposition (~480 kB) compresses in ~3 ms, 4x faster than level 9 for 0.5% more bytes."""


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
    return _registry(*_snapshot_collectors(store), ExporterCollector(store))


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, unknown OS


class _Deflated:
    """A text deflated up to a sync flush: the gzip header and blocks so far, the compressor to continue
    from, and the text's CRC-32."""

    def __init__(self, plain: bytes) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.prefix = GZIP_HEADER + self._compressor.compress(plain) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self._crc = zlib.crc32(plain)
        self._size = len(plain)
        self._lock = threading.Lock()

    def finish(self, tail: bytes) -> bytes:
        """One gzip member of the text followed by ``tail``: only ``tail`` is compressed."""
        with self._lock:
            compressor = self._compressor.copy()
        end = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        trailer = struct.pack("<II", zlib.crc32(tail, self._crc), (self._size + len(tail)) & 0xFFFFFFFF)
        return self.prefix + end + trailer


@dataclass(frozen=True)
class Body:
    """The exposition as of one ``store.version``: its text, deflated on first use (once per version)
    for gzip; :meth:`gzip` gives one gzip member of the text and any lines appended to it."""

    version: int
    plain: bytes

    @cached_property
    def _deflated(self) -> _Deflated:
        return _Deflated(self.plain)

    @cached_property
    def _whole(self) -> bytes:
        return self._deflated.finish(b"")

    def gzip(self, tail: bytes = b"") -> bytes:
        return self._deflated.finish(tail) if tail else self._whole


class RenderCache:
    """A :class:`Body` rendered once per change of the store (``store.version``) and served as is in
    between; a subclass says what to render (:meth:`_render`).

    One render at a time. While it runs, other readers get the previous body (complete, of the previous
    change, at most one render old) instead of all waiting for it or all rendering it at once under the
    GIL: with hundreds of envs a render takes tens of ms. Only the very first render is waited for:
    before it there is nothing to serve.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._body = Body(-1, b"")
        self._render_lock = threading.Lock()

    def body(self) -> Body:
        """The body as of the store's current version, or as of the previous one while another thread
        is rendering the current one."""
        version = self._store.version  # before rendering: a change meanwhile renders again next time
        body = self._body
        if body.version != version and self._render_lock.acquire(blocking=body.version < 0):
            try:
                body = self._body
                if body.version != version:  # not rendered by the reader we waited for
                    body = self._render(version)
                    self._body = body
            finally:
                self._render_lock.release()
        return body

    def _render(self, version: int) -> Body:
        raise NotImplementedError


class ExpositionCache(RenderCache):
    """The exposition, rendered and compressed once per change of the store, served as is in between.

    Nothing in it moves with the clock (ages are exported as timestamps), so every scrape between two
    changes gets the same bytes, plain or gzip. A snapshot never changes once published, so its
    families (all but the exporter's self-metrics) are rendered when it is first scraped and reused
    until the next one; the self-metrics are rendered again when ``store.version`` moves. With hundreds
    of envs and many scrapers at once, rendering per scrape under the GIL is what made /metrics slow.

    A body is deflated on first use and kept with it, so its gzip always decompresses to the plain body
    of the same version; /metrics appends a few lines that move with the clock to it
    (:mod:`exporter.expose.live_metrics`), compressing only those.
    """

    def __init__(self, store: SnapshotStore) -> None:
        super().__init__(store)
        self._snapshot_registry = _registry(*_snapshot_collectors(store))
        self._self_registry = _registry(ExporterCollector(store))
        # (the snapshot, its families' text), or None before the first render. The snapshot is weakly held:
        # held strongly, the one a scan had replaced stayed in memory until the next scrape (~63 MiB on the
        # huge benchmark tree).
        self._snapshot_text: tuple[weakref.ref[Snapshot] | None, bytes] | None = None

    def render(self, gzip: bool = False) -> bytes:
        """The whole exposition (as ``generate_latest`` writes it) as of now, or as of the previous
        change while another thread is rendering the latest one; a gzip member of it with ``gzip``."""
        body = self.body()
        return body.gzip() if gzip else body.plain

    def _render(self, version: int) -> Body:
        snapshot = self._store.snapshot
        cached = self._snapshot_text
        if cached is not None and (cached[0]() if cached[0] is not None else None) is snapshot:
            text = cached[1]
        else:
            text = generate_latest(self._snapshot_registry)
            self._snapshot_text = (weakref.ref(snapshot) if snapshot is not None else None, text)
        plain = text + generate_latest(self._self_registry)
        return Body(version, plain)
