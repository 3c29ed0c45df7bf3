"""HTTP front: ``/metrics`` from the latest snapshot, ``/healthz``, ``/readyz`` and a landing page.

A scrape renders the snapshot held in memory; it never triggers or waits for a scan.

The server speaks the small part of HTTP/1.x a scraper needs: ``GET`` and ``HEAD`` of a path, a
bounded request head, one response per connection (``Connection: close``). It is not wsgiref: with
hundreds of envs and many scrapers at once, wsgiref's header parsing (the e-mail parser) and WSGI
plumbing were half of a scrape's CPU, and on two cores under a full scan that CPU is the latency.
"""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from exporter import __version__
from exporter.collector import ExpositionCache
from exporter.gzipstream import accepts_gzip
from exporter.snapshot import SnapshotStore

__all__ = ["App", "MetricsServer", "Response", "make_app"]

log = logging.getLogger(__name__)

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

PLAIN = "text/plain; charset=utf-8"
GZIP_HEADERS = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))
# Request head limits: a scraper sends a request line and a handful of short headers.
MAX_LINE_BYTES = 8192
MAX_HEADERS = 100
# Threads serving connections. A fixed pool instead of a thread per request: starting a thread costs a
# handoff to a new OS thread, which under a full scan's load on two cores was most of a request's
# latency. More threads than this would only wait for the GIL.
HTTP_THREADS = 8
# A client that stops sending or reading loses its pool thread after this many seconds.
SOCKET_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Response:
    """What to answer: status, ``Content-Type`` and body (sent without it for ``HEAD``)."""

    status: HTTPStatus
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[str, Mapping[str, str]], Response]
"""Answers a ``GET`` of a path (query string removed) given the request headers (names lower-case)."""


def _plain(status: HTTPStatus, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, PLAIN, text.encode(), headers)


def make_app(store: SnapshotStore, telemetry_path: str) -> App:
    """The application serving every endpoint."""
    exposition = ExpositionCache(store)
    landing = LANDING_PAGE.format(version=html.escape(__version__), metrics=html.escape(telemetry_path)).encode()

    def app(path: str, headers: Mapping[str, str]) -> Response:
        if path == telemetry_path:
            gzip = accepts_gzip(headers.get("accept-encoding", ""))  # Prometheus asks for it
            extra = GZIP_HEADERS if gzip else (("Vary", "Accept-Encoding"),)
            return Response(HTTPStatus.OK, CONTENT_TYPE_LATEST, exposition.render(gzip=gzip), extra)
        if path == "/healthz":
            return _plain(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if store.ready:
                return _plain(HTTPStatus.OK, "ready\n")
            return _plain(HTTPStatus.SERVICE_UNAVAILABLE, "first scan not finished\n")
        if path == "/":
            return Response(HTTPStatus.OK, "text/html; charset=utf-8", landing)
        return _plain(HTTPStatus.NOT_FOUND, "not found\n")

    return app


class _BadRequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(socketserver.StreamRequestHandler):
    """One request per connection: read and check the head, answer, close."""

    timeout = SOCKET_TIMEOUT_SECONDS
    server: _Server

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request line or header too long\n")
        return line

    def _read_head(self) -> tuple[str, str, dict[str, str]]:
        parts = self._line().decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request line\n")
        method, target, _version = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return method, target, headers
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name.strip():
                raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed header\n")
            headers[name.strip().lower()] = value.strip()
        raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers\n")

    def handle(self) -> None:
        method = "GET"
        try:
            method, target, headers = self._read_head()
            if method not in ("GET", "HEAD"):
                response = _plain(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n", (("Allow", "GET, HEAD"),))
            else:
                response = self.server.app(urlsplit(target).path, headers)
        except _BadRequestError as exc:
            response = _plain(exc.status, str(exc))
        except (TimeoutError, ConnectionError):
            return  # the client went quiet or away: nobody to answer
        except Exception:
            log.exception("error answering a request")
            response = _plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        self._send(response, with_body=method != "HEAD")

    def _send(self, response: Response, with_body: bool) -> None:
        lines = [
            f"HTTP/1.1 {response.status.value} {response.status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with contextlib.suppress(TimeoutError, ConnectionError):  # the scraper gave up; it will scrape again
            self.wfile.write(head + response.body if with_body else head)


class _Server(socketserver.TCPServer):
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many scrapers arrive at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="http-request")
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error serving %s", client_address)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``app`` on ``host:port`` in a background thread; ``port`` 0 picks a free port, an empty
    ``host`` means every IPv4 interface."""

    def __init__(self, app: App, host: str, port: int) -> None:
        server_class = _ServerV6 if ":" in host else _Server
        self._server = server_class((host or "0.0.0.0", port), app)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
