"""HTTP front: connections, TLS and authentication in front of the application of ``app``.

What each path answers is ``app.make_app``'s; a scrape never waits for a scan.
With ``--web.config.file`` (``webconfig``, ``webguard``) connections are TLS and requests are authenticated.

The server speaks the small part of HTTP/1.x a scraper needs: ``GET`` and ``HEAD`` of a path, a
bounded request head, one response per connection (``Connection: close``). It is not wsgiref: with
hundreds of envs and many scrapers at once, wsgiref's header parsing (the e-mail parser) and WSGI
plumbing were half of a scrape's CPU, and on two cores under a full scan that CPU is the latency.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from exporter.expose.app import App, Response, plain
from exporter.expose.webguard import ActiveWebConfig, WebConfigWatcher, san_allowed

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)

# Request head limits: a scraper sends a request line and a handful of short headers.
MAX_HEAD_BYTES = 16384
MAX_LINE_BYTES = 8192
MAX_HEADERS = 100
# Threads serving connections. A fixed pool instead of a thread per request: starting a thread costs a
# handoff to a new OS thread, which under a full scan's load on two cores was most of a request's
# latency. More threads than this would only wait for the GIL.
HTTP_THREADS = 8
# Seconds a client has to send its request head, and then to take the response: a slow or silent
# client loses its serving thread after that.
SOCKET_TIMEOUT_SECONDS = 10.0
# Accepted connections waiting for a serving thread; beyond this, new ones get 503 at once rather
# than piling up (each holds a file descriptor).
MAX_WAITING = 64
TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends; anything else on a TLS port is plain HTTP


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


class _Handler:
    """One request per connection: the TLS handshake (with a web config that has TLS) and the request
    head, both within one deadline; then auth and the answer; close."""

    def __init__(self, sock: socket.socket, server: _Server, web: ActiveWebConfig | None) -> None:
        self.request = sock  # replaced by its TLS wrapper once wrapped: the socket to close
        self.server = server
        self.web = web
        self.peer_cert: dict[str, Any] | None = None

    def _receive_head(self, deadline: float) -> bytes:
        """The request head up to its blank line, all of it received by ``deadline`` however slowly the
        client trickles it: a per-recv timeout alone would let a client sending a byte every few seconds
        hold a serving thread for ever."""
        data = b""
        while True:
            ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
            if ends:
                return data[: min(ends)]
            if len(data) > MAX_HEAD_BYTES:
                raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too long\n")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request head not received in time")
            self.request.settimeout(remaining)
            chunk = self.request.recv(65536)
            if not chunk:
                raise ConnectionAbortedError("closed before the end of the request head")
            data += chunk

    def _handshake(self, context: ssl.SSLContext, deadline: float) -> bool:
        """Wrap the socket and complete the handshake by ``deadline`` (CPython's do_handshake keeps one
        deadline over all its reads, so a trickled handshake times out too). False: plain HTTP was
        sent (answered like Go's server), or the handshake failed or timed out (closed silently)."""
        raw = self.request
        raw.settimeout(max(deadline - time.monotonic(), 0.001))
        first = raw.recv(1, socket.MSG_PEEK)
        if first and first[0] != TLS_HANDSHAKE_RECORD:
            self._receive_head(deadline)
            self._send_all(_encode(plain(HTTPStatus.BAD_REQUEST, "Client sent an HTTP request to an HTTPS "
                                          "server.\n"), True), deadline)
            return False
        tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        self.request = tls
        tls.settimeout(max(deadline - time.monotonic(), 0.001))
        tls.do_handshake()
        self.peer_cert = tls.getpeercert()
        return True

    def _guard(self, headers: Mapping[str, str]) -> Response | None:
        """What the web config answers instead of the app: 429, 403 or 401."""
        web = self.web
        if web is None:
            return None
        if web.limited():
            return plain(HTTPStatus.TOO_MANY_REQUESTS, "Too Many Requests\n")
        tls = web.config.tls
        if tls is not None and tls.client_allowed_sans is not None and not san_allowed(
            self.peer_cert, tls.client_allowed_sans
        ):
            return plain(HTTPStatus.FORBIDDEN, "client certificate has none of the allowed SANs\n")
        if web.unauthorized(headers.get("authorization", "")):
            return plain(HTTPStatus.UNAUTHORIZED, "Unauthorized\n", (("WWW-Authenticate", "Basic"),))
        return None

    def serve(self) -> None:
        deadline = time.monotonic() + SOCKET_TIMEOUT_SECONDS
        with_body = True
        try:
            context = self.web.ssl_context if self.web else None
            if context is not None and not self._handshake(context, deadline):
                return
            head = self._receive_head(deadline)
            with_body = not head.startswith(b"HEAD ")
            method, path, headers = _parse_head(head)
            response = self._guard(headers)
            if response is None and method not in ("GET", "HEAD"):
                response = plain(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n", (("Allow", "GET, HEAD"),))
            elif response is None:
                response = self.server.app(path, headers)
        except _BadRequestError as exc:
            response = plain(exc.status, str(exc))
        except (TimeoutError, ConnectionError, ssl.SSLError) as exc:
            log.debug("dropped a connection: %r", exc)
            return  # the client went quiet or away, or failed the handshake: nobody to answer
        except Exception:
            log.exception("error answering a request")
            response = plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        extra = self.web.config.headers if self.web else ()
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):  # the scraper gave up
            self._send_all(_encode(response, with_body, extra), time.monotonic() + SOCKET_TIMEOUT_SECONDS)
        if isinstance(self.request, ssl.SSLSocket):
            with contextlib.suppress(OSError):  # send close_notify, without waiting for the client's
                self.request.setblocking(False)
                self.request.unwrap()

    def _send_all(self, data: bytes, deadline: float) -> None:
        """Send ``data`` by ``deadline`` in all, however slowly the client reads."""
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("response not taken in time")
            self.request.settimeout(remaining)
            view = view[self.request.send(view) :]


def _encode(response: Response, with_body: bool, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status.value} {response.status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (*response.headers, *extra)),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


class _Server(socketserver.TCPServer):
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many scrapers arrive at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, web: WebConfigWatcher | None) -> None:
        self.app = app
        self.web = web
        self._pool = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="http-request")
        self._waiting = 0  # accepted connections not yet answered (being served or queued)
        self._waiting_lock = threading.Lock()
        super().__init__(address, socketserver.BaseRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._waiting_lock:
            busy = self._waiting >= HTTP_THREADS + MAX_WAITING
            if not busy:
                self._waiting += 1
        if busy:
            # A fresh socket's send buffer is empty: this never blocks. Over TLS a plain answer would be
            # garbage and a handshake here would block the accepting thread: close without one.
            if self.web is None or self.web.active.ssl_context is None:
                with contextlib.suppress(OSError):
                    request.setblocking(False)
                    request.send(_encode(plain(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n"), True))
            self.shutdown_request(request)
            return
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        handler = _Handler(request, self, self.web.active if self.web else None)  # one config per connection
        try:
            handler.serve()
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(handler.request)
            with self._waiting_lock:
                self._waiting -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error serving %s", client_address)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class _ServerDualStack(_ServerV6):
    """``::`` with IPV6_V6ONLY off: IPv6 and (as mapped addresses) IPv4 on one socket."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _listen(host: str, port: int, app: App, web: WebConfigWatcher | None) -> _Server:
    if host:
        return (_ServerV6 if ":" in host else _Server)((host, port), app, web)
    if socket.has_ipv6 and hasattr(socket, "IPV6_V6ONLY"):
        try:
            return _ServerDualStack(("::", port), app, web)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise
            log.info("no IPv6 (%s): listening on every IPv4 interface only", exc.strerror)
    return _Server(("0.0.0.0", port), app, web)


class MetricsServer:
    """Serves ``app`` on ``host:port`` (or on each of ``addresses``), each in a background thread; ``port``
    0 picks a free port, an empty ``host`` means every interface, IPv6 and IPv4 (IPv4 only where the
    host has no IPv6). With ``web``, its web config (TLS, basic auth, headers) applies to every request,
    and the watcher that reloads it runs while the server does."""

    def __init__(self, app: App, host: str = "", port: int = 0, *, addresses: Sequence[tuple[str, int]] = (),
                 web: WebConfigWatcher | None = None) -> None:
        self._web = web
        self._servers: list[_Server] = []
        try:
            for listen_host, listen_port in addresses or [(host, port)]:
                self._servers.append(_listen(listen_host, listen_port, app, web))
        except OSError:
            for server in self._servers:
                server.server_close()
            raise
        self._threads = [threading.Thread(target=s.serve_forever, name="http", daemon=True) for s in self._servers]

    @property
    def port(self) -> int:
        """The port of the first address."""
        return self.ports[0]

    @property
    def ports(self) -> list[int]:
        return [int(s.server_address[1]) for s in self._servers]

    def start(self) -> None:
        if self._web is not None:
            self._web.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
        for server in self._servers:
            server.shutdown()
            server.server_close()
