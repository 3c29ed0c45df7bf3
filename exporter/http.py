"""HTTP front: ``/metrics`` from the latest snapshot, ``/healthz``, ``/readyz`` and a landing page.

A scrape renders the snapshot held in memory; it never triggers or waits for a scan.
"""

from __future__ import annotations

import html
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many scrapers arrive at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128


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
