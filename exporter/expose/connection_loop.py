"""HTTP front, the connection loop: one selector thread accepts every connection, completes its TLS handshake,
reads its request head and writes the rest of slow responses, all without blocking (``connections``); a serving
thread is given a connection only once its request head is complete, so clients that trickle or stall hold no
thread.

A connection that waits on its client (for its TLS handshake, its request head, or to take its response) has a
deadline; each client address may have only so many of those at once (its oldest is closed for a new one), and
the server as a whole only so many connections (the oldest waiting one is closed for a new one).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from exporter.expose.connections import READ, Connection, Limits, Step, WaitingRoom, client_key
from exporter.expose.webguard import WebConfigWatcher

__all__ = ["ConnectionLoop", "Dispatch"]

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKE = 64  # accepted in one go before the loop looks at the connections it has
ACCEPT_PAUSE_SECONDS = 0.1  # listening paused this long when out of file descriptors, instead of spinning
# Threads for TLS handshake steps. Each step is short and never waits for its client, but the first costs a
# signature with the GIL released: with a thread per core, the cheap last steps queued behind the signatures of
# new connections (wrk over TLS, medium tree: p99 62-70 ms and 660-820 req/s with 2, 36-37 ms and ~980 with 8).
HANDSHAKE_THREADS = 8


Dispatch = Callable[[Connection, bytes], None]
"""Called by the selector thread with a connection whose request head is complete (a serving thread's job)."""


def _nonblocking_pair() -> tuple[socket.socket, socket.socket]:
    pair = socket.socketpair()
    for sock in pair:
        sock.setblocking(False)
    return pair


class ConnectionLoop:
    """The selector thread of a server: accepts on ``listeners``, reads heads, hands complete ones to
    ``dispatch``, writes what :meth:`respond` could not send at once, enforces ``limits``."""

    def __init__(self, listeners: list[socket.socket], web: WebConfigWatcher | None, limits: Limits,
                 dispatch: Dispatch) -> None:
        self.limits, self._web, self._dispatch = limits, web, dispatch
        self._selector = selectors.DefaultSelector()
        self._listening = _Listening(listeners, self._selector)
        self._wake_r, self._wake_w = _nonblocking_pair()
        self._selector.register(self._wake_r.fileno(), READ)
        self._lock = threading.Lock()  # guards _open, and stopping against handoffs
        self._open: set[Connection] = set()
        self._handoffs: deque[Connection] = deque()  # responses left to the loop (append, popleft: thread-safe)
        self._waiting = WaitingRoom()
        self._handshakes = _Handshakes(web is not None, limits.max_head, self._wake)
        self.stopping = False  # (read by serving threads: a request queued at stop is not answered)
        self._thread = threading.Thread(target=self._run, name="http-connections", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every connection; returns within milliseconds. A connection another
        thread holds (answering it, or a handshake step) is closed by that thread, never under its feet."""
        with self._lock:
            self.stopping = True
        self._handshakes.stop()
        self._wake()
        self._thread.join(1.0)
        with self._lock:
            held = [conn for conn in self._open if not (conn.serving or conn.busy)]
        for conn in held + [conn for conn, _ in self._handshakes.finished()]:
            self._finish(conn)
        self._listening.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def respond(self, conn: Connection, data: bytes) -> None:
        """Send ``data`` on a connection a serving thread holds, then close it; what the client does not
        take at once is left to the selector thread, within the deadline. Any thread."""
        conn.out = memoryview(data)
        try:
            done = conn.send_some()
        except OSError:
            done = True
        with self._lock:  # (never handed back once stopping: nobody would take it)
            handed, conn.serving = not (done or self.stopping), False
            if handed:
                self._handoffs.append(conn)
        self._wake() if handed else self._finish(conn)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed (stopped)
            self._wake_w.send(b"x")

    def _finish(self, conn: Connection) -> None:
        conn.close()
        with self._lock:
            self._open.discard(conn)

    def _run(self) -> None:
        while not self.stopping:
            timeout = self._listening.shorten(self._waiting.timeout(time.monotonic()))
            for key, _events in self._selector.select(timeout):
                try:
                    self._on_event(key)
                except Exception:  # a bug with one connection must not stop the server
                    log.exception("error handling a connection")
                    if isinstance(key.data, Connection):
                        self._drop(key.data)
            self._expire(time.monotonic())

    def _on_event(self, key: selectors.SelectorKey) -> None:
        conn = key.data
        if isinstance(conn, Connection):
            if not conn.closed:  # (closed to make room by an earlier event of the same select)
                self._advance(conn)
        elif key.fd == self._wake_r.fileno():
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
            while self._handoffs:
                conn = self._handoffs.popleft()
                self._waiting.add(conn, time.monotonic() + self.limits.timeout)
                self._watch(conn)
            for conn, step in self._handshakes.finished():
                self._after(conn, step)
        else:
            for sock, address in self._listening.accept(key.fd):
                self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Make room within the limits, closing the oldest connection waiting on the same client, else on any
        client; a connection with none to close gets 503 itself."""
        web = self._web.active if self._web else None  # one config per connection
        conn = Connection(sock, client_key(str(address[0])), web, time.monotonic() + self.limits.timeout)
        full = len(self._open) >= self.limits.total  # (read without the lock: a bound, not an invariant)
        victim = self._waiting.make_room(conn, self.limits.per_client, full)
        if victim is not None:
            victim.refuse()
            self._drop(victim)
        if victim is conn:
            return
        with self._lock:
            self._open.add(conn)
        self._waiting.add(conn, conn.deadline)
        self._advance(conn)  # the request is often there already: no wait for the selector to say so

    def _advance(self, conn: Connection) -> None:
        if self._handshakes.take(conn):
            self._unwatch(conn)  # (one thread at a time uses a connection)
        else:
            self._after(conn, conn.step(self.limits.max_head))

    def _after(self, conn: Connection, step: Step) -> None:
        if step.kind == "wait":
            self._watch(conn)
        elif step.kind == "drop":
            self._drop(conn)
        else:
            self._waiting.remove(conn)
            self._unwatch(conn)
            conn.serving = step.kind == "head"  # a serving thread's now
            (self._dispatch if conn.serving else self.respond)(conn, step.data)

    def _drop(self, conn: Connection) -> None:
        self._waiting.remove(conn)
        if conn.busy:  # dropped when its step comes back
            conn.doomed = True
            return
        self._unwatch(conn)
        self._finish(conn)

    def _watch(self, conn: Connection) -> None:
        (self._selector.modify if conn.registered else self._selector.register)(conn.fd, conn.want, conn)
        conn.registered = True

    def _unwatch(self, conn: Connection) -> None:
        if conn.registered:  # (and only then: once closed, its fd number may be another connection's)
            self._selector.unregister(conn.fd)
            conn.registered = False

    def _expire(self, now: float) -> None:
        while (oldest := self._waiting.oldest()) is not None:
            if oldest.deadline > now:
                break
            log.debug("dropped a connection from %s: its deadline passed", oldest.client)
            self._drop(oldest)
        self._listening.resume_if_due(now)


class _Handshakes:
    """TLS handshake steps, on threads of their own: the first costs a signature (~1 ms with RSA-2048) which,
    done in the loop, would queue every other connection behind it; OpenSSL releases the GIL for it. A step
    never waits for the client (the socket is non-blocking); the loop collects what it came to."""

    def __init__(self, tls_possible: bool, max_head: int, wake: Callable[[], None]) -> None:
        self._pool = ThreadPoolExecutor(HANDSHAKE_THREADS, "http-tls") if tls_possible else None
        self._max_head, self._wake = max_head, wake
        self._done: deque[tuple[Connection, Step]] = deque()  # (append, popleft: thread-safe)
        self._lock = threading.Lock()  # guards stopped against submitting and _done
        self.stopped = False

    def take(self, conn: Connection) -> bool:
        """Step ``conn`` on a thread if it is in its handshake; False: step it in the loop."""
        if self._pool is None or not conn.handshaking:
            return False
        with self._lock:
            if self.stopped:  # (the pool takes nothing more)
                return False
            conn.busy = True
            self._pool.submit(self._step, conn)
        return True

    def _step(self, conn: Connection) -> None:
        try:
            step = conn.step(self._max_head)
        except Exception:  # a bug: the connection must still come back, to be closed
            log.exception("error handling a connection")
            step = Step("drop")
        with self._lock:
            collected = not self.stopped  # (else nobody would: it closes here)
            if collected:
                self._done.append((conn, step))
        self._wake() if collected else conn.close()

    def finished(self) -> Iterator[tuple[Connection, Step]]:
        while self._done:
            conn, step = self._done.popleft()
            conn.busy = False
            yield conn, Step("drop") if conn.doomed else step

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # steps queued still run, and close their connections


class _Listening:
    """The listening sockets in the loop's selector; paused for a moment when accept fails for want of
    file descriptors (the socket stays readable: retrying at once would spin)."""

    def __init__(self, listeners: list[socket.socket], selector: selectors.BaseSelector) -> None:
        self._listeners = {s.fileno(): s for s in listeners}
        self._selector = selector
        self.paused = False
        self._resume_at = 0.0
        for fd, sock in self._listeners.items():
            sock.setblocking(False)
            selector.register(fd, READ)

    def accept(self, fd: int) -> Iterator[tuple[socket.socket, tuple[str, int]]]:
        """The connections waiting on listener ``fd``, non-blocking, up to ACCEPTS_PER_WAKE."""
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = self._listeners[fd].accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS
                log.warning("cannot accept a connection: %s", exc.strerror)
                self._pause()
                return
            sock.setblocking(False)
            yield sock, address

    def _pause(self) -> None:
        if not self.paused:
            for fd in self._listeners:
                self._selector.unregister(fd)
        self.paused, self._resume_at = True, time.monotonic() + ACCEPT_PAUSE_SECONDS

    def shorten(self, timeout: float | None) -> float | None:
        """The selector's timeout, at most until listening resumes."""
        if not self.paused:
            return timeout
        return ACCEPT_PAUSE_SECONDS if timeout is None else min(timeout, ACCEPT_PAUSE_SECONDS)

    def resume_if_due(self, now: float) -> None:
        if self.paused and now >= self._resume_at:
            self.paused = False
            for fd in self._listeners:
                self._selector.register(fd, READ)

    def close(self) -> None:
        for sock in self._listeners.values():
            sock.close()
