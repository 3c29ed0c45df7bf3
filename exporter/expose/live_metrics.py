"""Self-metrics that move with the clock, appended to the cached exposition: ``process_*``
(prometheus_client's process collector) and the web config's reload counter.

The rest of the exposition is rendered and compressed once per store change (``ExpositionCache``); these
few lines are rendered again when the answer is more than ``LIVE_MAX_AGE`` old, so they are at most a
second stale instead of stale between changes.
The gzip answer stays one gzip member: the cached body is deflated once per change up to a sync flush
(:class:`exporter.expose.exposition.Body`) and the answer continues a copy of that deflate stream with
the live lines, so it compresses only those (a copy of zlib's state is a memcpy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.expose.exposition import ExpositionCache
from exporter.expose.webguard import RELOADS

__all__ = ["LiveExposition", "WebConfigCollector"]

WEB_CONFIG_RELOADS = "conda_exporter_web_config_reloads"
WEB_CONFIG_RELOADS_HELP = (
    "Reloads of --web.config.file after it or a certificate file it names changed, by result "
    "(failure: the previous config stays in force)."
)
# Seconds an answer with the live lines is reused. Reading /proc for process_* on every request cut the
# throughput of /metrics under 20 concurrent clients by three quarters; Prometheus scrapes every 15 s.
LIVE_MAX_AGE = 1.0


class WebConfigCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(WEB_CONFIG_RELOADS, WEB_CONFIG_RELOADS_HELP, labels=("result",))
        for result in ("success", "failure"):
            reloads.add_metric((result,), RELOADS[result])
        yield reloads


class LiveExposition:
    """``ExpositionCache``'s body with the live self-metrics appended, plain or as one gzip member."""

    def __init__(self, cache: ExpositionCache) -> None:
        self._cache = cache
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(ProcessCollector(registry=None))
        self._registry.register(WebConfigCollector())
        # gzip or not -> (the cached body it was made from, when, the whole answer)
        self._answers: dict[bool, tuple[bytes, float, bytes]] = {}
        self._lock = threading.Lock()

    def render(self, gzip: bool = False) -> bytes:
        """The exposition with the live lines, at most ``LIVE_MAX_AGE`` seconds old."""
        body = self._cache.body()
        now = time.monotonic()
        answer = self._answers.get(gzip)
        if answer is None or answer[0] is not body.plain or now - answer[1] >= LIVE_MAX_AGE:
            with self._lock:  # one render of the live lines at a time; the others take its answer
                answer = self._answers.get(gzip)
                if answer is None or answer[0] is not body.plain or now - answer[1] >= LIVE_MAX_AGE:
                    live = generate_latest(self._registry)
                    answer = (body.plain, time.monotonic(), body.gzip(live) if gzip else body.plain + live)
                    self._answers[gzip] = answer
        return answer[2]
