"""The application behind the HTTP front: which response each path gets.

``make_app`` maps a ``GET`` of a path to a :class:`Response`: ``/metrics`` from the latest snapshot (the
exposition rendered once per change of the store plus the live lines), ``/healthz``, ``/readyz`` and the
page ``/`` (:mod:`exporter.expose.page`, also rendered once per change). It knows nothing of sockets, TLS
or authentication (``server``, ``webguard``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST

from exporter.expose.exposition import ExpositionCache
from exporter.expose.live_metrics import LiveExposition
from exporter.expose.page import PageCache, starting_page
from exporter.expose.page_assets import CONTENT_SECURITY_POLICY
from exporter.snapshot.store import SnapshotStore

__all__ = ["App", "Response", "accepts_gzip", "make_app", "plain"]

PLAIN = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
GZIP_HEADERS = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))
PAGE_HEADERS = (("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("Cache-Control", "no-cache"))


@dataclass(frozen=True)
class Response:
    """What to answer: status, ``Content-Type`` and body (sent without it for ``HEAD``)."""

    status: HTTPStatus
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[str, Mapping[str, str]], Response]
"""Answers a ``GET`` of a path (query string removed) given the request headers (names lower-case)."""


def plain(status: HTTPStatus, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, PLAIN, text.encode(), headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value admits gzip (listed, or ``*``, with q above 0)."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            quality[coding.lower()] = q
    return quality.get("gzip", quality.get("x-gzip", quality.get("*", 0.0))) > 0


def make_app(store: SnapshotStore, telemetry_path: str) -> App:
    """The application serving every endpoint."""
    exposition = LiveExposition(ExpositionCache(store))  # process_* and the like rendered per scrape
    page = PageCache(store, telemetry_path, socket.gethostname())
    starting = starting_page()

    def page_response(headers: Mapping[str, str]) -> Response:
        if store.snapshot is None:  # never half numbers: nothing until the first scan is complete
            return Response(HTTPStatus.SERVICE_UNAVAILABLE, HTML, starting, (*PAGE_HEADERS, ("Retry-After", "5")))
        body = page.body()
        if accepts_gzip(headers.get("accept-encoding", "")):
            return Response(HTTPStatus.OK, HTML, body.gzip(), (*PAGE_HEADERS, *GZIP_HEADERS))
        return Response(HTTPStatus.OK, HTML, body.plain, (*PAGE_HEADERS, ("Vary", "Accept-Encoding")))

    def app(path: str, headers: Mapping[str, str]) -> Response:
        if path == telemetry_path:
            gzip = accepts_gzip(headers.get("accept-encoding", ""))  # Prometheus asks for it
            extra = GZIP_HEADERS if gzip else (("Vary", "Accept-Encoding"),)
            return Response(HTTPStatus.OK, CONTENT_TYPE_LATEST, exposition.render(gzip=gzip), extra)
        if path == "/healthz":
            alive, reason = store.alive()
            return plain(HTTPStatus.OK, "ok\n") if alive else plain(
                HTTPStatus.SERVICE_UNAVAILABLE, f"daemon loop stopped: {reason}\n")
        if path == "/readyz":
            if store.ready:
                return plain(HTTPStatus.OK, "ready\n")
            return plain(HTTPStatus.SERVICE_UNAVAILABLE, "first scan not finished\n")
        if path == "/":
            return page_response(headers)
        return plain(HTTPStatus.NOT_FOUND, "not found\n")

    return app
