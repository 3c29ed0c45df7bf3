"""HTTP front: connections, TLS and authentication in front of the application of ``app``.

What each path answers is ``app.make_app``'s; a scrape never waits for a scan.
With ``--web.config.file`` (``webconfig``, ``webguard``) connections are TLS and requests are authenticated.

The server speaks the small part of HTTP/1.x a scraper needs: ``GET`` and ``HEAD`` of a path, a
bounded request head, one response per connection (``Connection: close``). It is not wsgiref: with
hundreds of envs and many scrapers at once, wsgiref's header parsing (the e-mail parser) and WSGI
plumbing were half of a scrape's CPU, and on two cores under a full scan that CPU is the latency.
One selector thread (``connections``) does the TLS handshakes and reads the request heads of every
connection without blocking; a serving thread gets a request only once its head is complete, so slow or
idle clients hold no thread.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from urllib.parse import urlsplit

from exporter.expose.app import App, Response, plain
from exporter.expose.connection_loop import ConnectionLoop
from exporter.expose.connections import Connection, Limits, encode_response
from exporter.expose.webguard import WebConfigWatcher, san_allowed

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)

# Request head limits: a scraper sends a request line and a handful of short headers.
MAX_HEAD_BYTES = 16384
MAX_LINE_BYTES = 8192
MAX_HEADERS = 100
# Threads answering complete requests. A fixed pool instead of a thread per request: starting a thread
# costs a handoff to a new OS thread, which under a full scan's load on two cores was most of a request's
# latency. More threads than this would only wait for the GIL. No client I/O blocks them.
HTTP_THREADS = 8
# Seconds a client has to complete its TLS handshake and send its request head, and then to take the
# response: a slow or silent client's connection is closed after that.
SOCKET_TIMEOUT_SECONDS = 10.0
# Connections one client address (an IPv6 /64) may have waiting on it (handshake, head, or a response not
# yet taken); a new one beyond this closes its oldest. Prometheus holds one per target; a flood from one
# address then cannot crowd out a scraper from another, nor its own next request.
MAX_PER_CLIENT = 32
# Open connections in all: each holds a file descriptor, and a scan needs its own (the walker one per
# directory level it is in, the worker pool its pipes), so at most half the process's limit. Beyond it a
# new connection closes the oldest one waiting on its client.
MAX_CONNECTIONS = 4096
LISTEN_BACKLOG = 128  # a backlog of 5 drops connections when many scrapers arrive at once; a SYN retries after 1 s


def _connection_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft // 2))


class _BadRequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, path and headers (names lower-case) of a request head, without its blank line."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    if any(len(line) > MAX_LINE_BYTES for line in lines):
        raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request line or header too long\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers\n")
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request line\n")
    method, target, _version = parts
    try:
        path = urlsplit(target).path
    except ValueError:
        raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request target\n") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed header\n")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers




class _Requests:
    """Answers complete requests: parse, web config guard (429, 403, 401), app."""

    def __init__(self, app: App) -> None:
        self.app = app

    def _guard(self, conn: Connection, headers: Mapping[str, str]) -> Response | None:
        """What the web config answers instead of the app: 429, 403 or 401."""
        web = conn.web
        if web is None:
            return None
        if web.limited():
            return plain(HTTPStatus.TOO_MANY_REQUESTS, "Too Many Requests\n")
        tls = web.config.tls
        if tls is not None and tls.client_allowed_sans is not None and not san_allowed(
            conn.peer_cert, tls.client_allowed_sans
        ):
            return plain(HTTPStatus.FORBIDDEN, "client certificate has none of the allowed SANs\n")
        if web.unauthorized(headers.get("authorization", "")):
            return plain(HTTPStatus.UNAUTHORIZED, "Unauthorized\n", (("WWW-Authenticate", "Basic"),))
        return None

    def answer(self, conn: Connection, head: bytes) -> bytes:
        """The response to a complete request head (without its blank line), encoded."""
        with_body = not head.startswith(b"HEAD ")
        try:
            method, path, headers = _parse_head(head)
            response = self._guard(conn, headers)
            if response is None and method not in ("GET", "HEAD"):
                response = plain(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n", (("Allow", "GET, HEAD"),))
            elif response is None:
                response = self.app(path, headers)
        except _BadRequestError as exc:
            response = plain(exc.status, str(exc))
        except Exception:
            log.exception("error answering a request")
            response = plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        extra = conn.web.config.headers if conn.web else ()
        return encode_response(response, with_body, extra)


def _bind(family: socket.AddressFamily, address: tuple[str, int], dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:  # "::" with IPV6_V6ONLY off: IPv6 and (as mapped addresses) IPv4 on one socket
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _listen(host: str, port: int) -> socket.socket:
    if host:
        return _bind(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))
    if socket.has_ipv6 and hasattr(socket, "IPV6_V6ONLY"):
        try:
            return _bind(socket.AF_INET6, ("::", port), dual_stack=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise
            log.info("no IPv6 (%s): listening on every IPv4 interface only", exc.strerror)
    return _bind(socket.AF_INET, ("0.0.0.0", port))


class MetricsServer:
    """Serves ``app`` on ``host:port`` (or on each of ``addresses``) from background threads; ``port``
    0 picks a free port, an empty ``host`` means every interface, IPv6 and IPv4 (IPv4 only where the
    host has no IPv6). With ``web``, its web config (TLS, basic auth, headers) applies to every request,
    and the watcher that reloads it runs while the server does."""

    def __init__(self, app: App, host: str = "", port: int = 0, *, addresses: Sequence[tuple[str, int]] = (),
                 web: WebConfigWatcher | None = None) -> None:
        self._web = web
        listeners: list[socket.socket] = []
        try:
            for listen_host, listen_port in addresses or [(host, port)]:
                listeners.append(_listen(listen_host, listen_port))
        except OSError:
            for sock in listeners:
                sock.close()
            raise
        self._ports = [int(s.getsockname()[1]) for s in listeners]
        self._requests = _Requests(app)
        self._pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="http-request")
        limits = Limits(SOCKET_TIMEOUT_SECONDS, MAX_PER_CLIENT, _connection_limit(), MAX_HEAD_BYTES)
        self._loop = ConnectionLoop(listeners, web, limits, self._dispatch)

    def _dispatch(self, conn: Connection, head: bytes) -> None:
        self._pool.submit(self._serve, conn, head)

    def _serve(self, conn: Connection, head: bytes) -> None:
        self._loop.respond(conn, b"" if self._loop.stopping else self._requests.answer(conn, head))

    @property
    def port(self) -> int:
        """The port of the first address."""
        return self._ports[0]

    @property
    def ports(self) -> list[int]:
        return list(self._ports)

    def start(self) -> None:
        if self._web is not None:
            self._web.start()
        self._loop.start()

    def stop(self) -> None:
        """Stop listening and close every connection, at once (no poll interval to wait out)."""
        if self._web is not None:
            self._web.stop()
        self._loop.stop()
        self._pool.shutdown(wait=False)  # what is queued closes its connection at once
