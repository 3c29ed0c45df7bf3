"""HTTP front, connections: one client connection's non-blocking I/O (TLS handshake, request head, response)
and the bookkeeping of the connections that wait on their client, for ``connection_loop``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, NamedTuple

from exporter.expose.app import Response, plain
from exporter.expose.webguard import ActiveWebConfig

__all__ = ["AnswerError", "Connection", "Limits", "Step", "WaitingRoom", "client_key", "encode_response"]

log = logging.getLogger(__name__)

_CLOSING = threading.Lock()

HTTPS_REQUIRED = "Client sent an HTTP request to an HTTPS server.\n"  # Go's words
TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends; anything else on a TLS port is plain HTTP
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(frozen=True)
class Limits:
    """``timeout``: seconds a client has for its handshake and request head together, and again to take its
    response; ``per_client``: connections one client address (an IPv6 /64) may have waiting on it;
    ``total``: open connections in all; ``max_head``: bytes of a request head."""

    timeout: float
    per_client: int
    total: int
    max_head: int


class AnswerError(Exception):
    """The request is answered by the connection loop itself, with ``answer`` (encoded): its head passed
    ``Limits.max_head`` bytes without its blank line (431), or it is plain HTTP to a TLS port (400, as Go says)."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(answer.split(b"\r\n", 1)[0].decode("latin-1"))
        self.answer = answer


def encode_response(response: Response, with_body: bool, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The response's bytes; ``extra`` (the web config's ``http_server_config.headers``) replaces the app's
    header of the same name (case-insensitive), so the operator's value is the one sent, never a second one."""
    overridden = {name.lower() for name, _ in extra}
    own = (header for header in response.headers if header[0].lower() not in overridden)
    lines = [
        f"HTTP/1.1 {response.status.value} {response.status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (*own, *extra)),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


def client_key(host: str) -> str:
    """What per-client limits count: an IPv4 address (also when mapped into IPv6), an IPv6 /64 (one host
    can pick any address of its /64)."""
    if ":" not in host:
        return host  # IPv4, as accept() spells it
    if host.startswith("::ffff:") and "." in host:
        return host[7:]  # IPv4 on a dual-stack socket
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class Step(NamedTuple):
    """What a connection's I/O came to: ``wait`` (for its ``want`` event), ``drop`` (the client went away or
    failed its handshake, or the response is all sent), ``head`` (complete: ``data``), ``answer`` (the loop
    answers with ``data`` itself)."""

    kind: Literal["wait", "drop", "head", "answer"]
    data: bytes = b""


class Connection:
    """One client connection: its socket (an SSLSocket once the handshake starts), the web config it was
    accepted under, and what the loop knows of it. Used by one thread at a time: the selector thread until
    its head is complete, then a serving thread, then (for a slow reader) the selector thread again."""

    __slots__ = ("busy", "client", "closed", "deadline", "doomed", "fd", "handshaking", "head", "out", "peer_cert",
                 "plain_on_tls", "registered", "serving", "sock", "want", "web")

    def __init__(self, sock: socket.socket, client: str, web: ActiveWebConfig | None, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.web = web
        self.deadline = deadline
        self.handshaking = web is not None and web.ssl_context is not None  # until the first byte says
        self.plain_on_tls = False
        self.head = bytearray()
        self.out = memoryview(b"")
        self.want = READ
        self.peer_cert: dict[str, Any] | None = None
        self.closed = False
        self.registered = False  # in the loop's selector
        self.busy = self.doomed = False  # a step on another thread; to be dropped when it comes back
        self.serving = False  # held by a serving thread, from its complete head until it is answered

    def receive(self, max_head: int) -> bytes | None:
        """Take the handshake and the head as far as the socket allows: the head (without its blank line)
        once complete, else None with ``want`` set to the event to wait for. Raises OSError (ssl.SSLError
        included) when the client went away or failed its handshake; AnswerError."""
        if self.handshaking and not self._handshake():
            return None
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                self.want = READ
                return None
            except ssl.SSLWantWriteError:
                self.want = WRITE
                return None
            if not chunk:
                raise ConnectionAbortedError("closed before the end of the request head")
            start = max(len(self.head) - 3, 0)  # (a head trickled byte by byte is searched once, not n² times)
            self.head += chunk
            ends = [i for i in (self.head.find(b"\r\n\r\n", start), self.head.find(b"\n\n", start)) if i >= 0]
            if ends and self.plain_on_tls:
                raise AnswerError(encode_response(plain(HTTPStatus.BAD_REQUEST, HTTPS_REQUIRED), True))
            if ends:
                return bytes(self.head[: min(ends)])
            if len(self.head) > max_head:
                raise AnswerError(encode_response(plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                                        "request head too long\n"), True))

    def step(self, max_head: int) -> Step:
        """Take the connection as far as its socket allows, never blocking: the handshake and the head, or the
        response being sent."""
        try:
            if self.out:
                return Step("drop") if self.send_some() else Step("wait")
            head = self.receive(max_head)
        except AnswerError as exc:
            return Step("answer", exc.answer)
        except OSError as exc:  # the client went away or failed its handshake: nobody to answer
            log.debug("dropped a connection: %r", exc)
            return Step("drop")
        return Step("wait") if head is None else Step("head", head)

    def _handshake(self) -> bool:
        """Advance the TLS handshake; True once done, or once the client turned out to speak plain HTTP."""
        if not isinstance(self.sock, ssl.SSLSocket):
            try:
                first = self.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return False
            if not first:
                raise ConnectionAbortedError("closed before the handshake")
            if first[0] != TLS_HANDSHAKE_RECORD:
                self.handshaking, self.plain_on_tls = False, True
                return True
            assert self.web is not None and self.web.ssl_context is not None
            self.sock = self.web.ssl_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        tls = self.sock
        assert isinstance(tls, ssl.SSLSocket)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self.want = READ
            return False
        except ssl.SSLWantWriteError:
            self.want = WRITE
            return False
        self.peer_cert = tls.getpeercert()
        self.handshaking = False
        return True

    def send_some(self) -> bool:
        """Send what the socket takes of ``out``; True once all of it is sent. Raises OSError."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self.want = WRITE
                return False
            except ssl.SSLWantReadError:
                self.want = READ
                return False
            self.out = self.out[sent:]
        return True

    def refuse(self) -> None:
        """Say 503 where that can be said (plain HTTP, nothing of a response sent yet); the caller closes."""
        if (self.plain_on_tls or self.web is None or self.web.ssl_context is None) and not self.out:
            with contextlib.suppress(OSError):
                self.sock.send(encode_response(plain(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n"), True))

    def close(self) -> None:
        """Close, after close_notify (TLS, without waiting for the client's) or a FIN; never raises."""
        with _CLOSING:  # (at stop, two threads can reach here)
            if self.closed:
                return
            self.closed = True
        with contextlib.suppress(OSError, ValueError):
            if isinstance(self.sock, ssl.SSLSocket) and not self.handshaking:
                self.sock.unwrap()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()


class WaitingRoom:
    """The connections waiting on their client, oldest (soonest deadline) first, overall and by client."""

    def __init__(self) -> None:
        self._all: dict[Connection, None] = {}
        self._by_client: dict[str, dict[Connection, None]] = {}

    def add(self, conn: Connection, deadline: float) -> None:
        """Deadlines must come in order: every one is the same timeout from the time it is added."""
        conn.deadline = deadline
        self._all[conn] = None
        self._by_client.setdefault(conn.client, {})[conn] = None

    def remove(self, conn: Connection) -> None:
        self._all.pop(conn, None)
        mine = self._by_client.get(conn.client)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_client[conn.client]

    def oldest(self, client: str | None = None) -> Connection | None:
        """The oldest waiting connection, of ``client`` or of any."""
        return next(iter(self._all if client is None else self._by_client.get(client, {})), None)

    def timeout(self, now: float) -> float | None:
        """Seconds until the next deadline (None: no connection waits)."""
        first = self.oldest()
        return None if first is None else max(first.deadline - now, 0.0)

    def make_room(self, conn: Connection, per_client: int, full: bool) -> Connection | None:
        """The connection to close for ``conn`` to come in: its client's oldest waiting one when the client has
        ``per_client`` waiting, else when ``full`` the oldest waiting one of any client, or ``conn`` itself
        when none waits."""
        if len(self._by_client.get(conn.client, ())) >= per_client:
            return self.oldest(conn.client)
        return (self.oldest() or conn) if full else None
