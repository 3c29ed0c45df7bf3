"""HTTP front: ``/metrics`` from the latest snapshot, ``/healthz``, ``/readyz`` and a landing page.

A scrape renders the snapshot held in memory; it never triggers or waits for a scan.
"""

from __future__ import annotations

import html
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

from exporter import __version__
from exporter.collector import ExpositionCache
from exporter.snapshot import SnapshotStore

__all__ = ["MetricsServer", "make_app"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

LANDING_PAGE = """<!DOCTYPE html>
<html><head><title>conda-env-exporter</title></head>
<body>
<h1>conda-env-exporter</h1>
<p>Hardlink-aware disk usage of conda environments. Version {version}.</p>
<ul>
<li><a href="{metrics}">{metrics}</a>: metrics</li>
<li><a href="/healthz">/healthz</a>: process alive</li>
<li><a href="/readyz">/readyz</a>: first scan done</li>
</ul>
</body></html>
"""


def _plain(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def make_app(store: SnapshotStore, telemetry_path: str) -> WSGIApp:
    """The WSGI application serving every endpoint."""
    exposition = ExpositionCache(store)
    landing = LANDING_PAGE.format(version=html.escape(__version__), metrics=html.escape(telemetry_path))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == telemetry_path:
            data = exposition.render()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
            return [data]
        if path == "/healthz":
            return _plain(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            if store.ready:
                return _plain(start_response, "200 OK", "ready\n")
            return _plain(start_response, "503 Service Unavailable", "first scan not finished\n")
        if path == "/":
            data = landing.encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [data]
        return _plain(start_response, "404 Not Found", "not found\n")

    return app


# Threads serving requests. A fixed pool instead of a thread per request: starting a thread costs a
# handoff to a new OS thread, which under a full scan's load on two cores was most of a request's
# latency. More threads than this would only wait for the GIL.
HTTP_THREADS = 8


class _QuietHandler(WSGIRequestHandler):
    # A client that stops sending or reading loses its pool thread after this many seconds.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _ThreadingServer(WSGIServer):
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many scrapers arrive at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128

    def server_activate(self) -> None:
        super().server_activate()
        self._pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="http-request")

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "_pool"):
            self._pool.shutdown(wait=False, cancel_futures=True)


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves the app on ``host:port`` in a background thread; ``port`` 0 picks a free port."""

    def __init__(self, app: WSGIApp, host: str, port: int) -> None:
        server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
        self._server = make_server(host or "0.0.0.0", port, app, server_class, _QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
