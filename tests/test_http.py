"""The HTTP front over real sockets: what scrapers send, what broken or hostile clients send."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import socket
import time
import zlib
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

import exporter.expose.server
from exporter.expose.app import accepts_gzip, make_app
from exporter.expose.exposition import ExpositionCache
from exporter.expose.live_metrics import LiveExposition
from exporter.expose.server import MAX_HEADERS, MAX_LINE_BYTES, MetricsServer
from exporter.snapshot.store import SnapshotStore
from tests.exposition import samples
from tests.oracle import du_bytes


def raw(server: MetricsServer, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(server: MetricsServer, method: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_get_serves_the_exposition_with_its_length(server: MetricsServer, fixture_root: Path) -> None:
    response, body = request(server, "GET", "/metrics?ignored=1")
    assert response.status == 200
    assert response.getheader("Content-Type") == CONTENT_TYPE_LATEST  # the type generate_latest writes
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert list(samples(body.decode())["conda_root_bytes"].values()) == [du_bytes(fixture_root)]


def test_head_has_the_headers_of_get_and_no_body(server: MetricsServer) -> None:
    get, body = request(server, "GET", "/healthz")
    head, nothing = request(server, "HEAD", "/healthz")
    assert head.status == get.status == 200 and body == b"ok\n" and nothing == b""
    assert head.getheader("Content-Length") == get.getheader("Content-Length") == "3"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /metrics SPDY/3\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET /" + b"a" * MAX_LINE_BYTES + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", b"431"),
        (b"GET /nope HTTP/1.0\r\n\r\n", b"404"),
    ],
    ids=["post", "garbage", "not-http", "bad-header", "long-line", "many-headers", "not-found"],
)
def test_bad_requests_get_a_clear_status_and_the_server_goes_on(server: MetricsServer, data: bytes,
                                                                 status: bytes) -> None:
    answer = raw(server, data)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert b"Connection: close" in answer
    if status == b"405":
        assert b"Allow: GET, HEAD" in answer
    assert request(server, "GET", "/healthz")[0].status == 200


def test_silent_clients_are_dropped_and_never_starve_scrapers(store: SnapshotStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter.expose.server, "SOCKET_TIMEOUT_SECONDS", 0.3)
    running = MetricsServer(make_app(store, "/metrics"), "127.0.0.1", 0)
    running.start()
    try:
        # as many idle connections as there are serving threads, each holding one
        silent = [socket.create_connection(("127.0.0.1", running.port), timeout=5)
                  for _ in range(exporter.expose.server.HTTP_THREADS)]
        response, _ = request(running, "GET", "/healthz")  # served at once: idle connections hold no thread
        assert response.status == 200
        for sock in silent:
            assert sock.recv(1) == b""  # closed by the server, without an answer
            sock.close()
    finally:
        running.stop()


def test_a_client_trickling_its_request_loses_its_thread_at_the_deadline(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter.expose.server, "SOCKET_TIMEOUT_SECONDS", 0.5)
    running = MetricsServer(make_app(store, "/metrics"), "127.0.0.1", 0)
    running.start()
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            closed = False
            for _ in range(100):  # a header byte every 50 ms, for up to 5 s: each recv would be quick
                try:
                    sock.sendall(b"X")
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.05)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
            assert closed and time.monotonic() - started < 2.5
    finally:
        running.stop()


def test_a_client_beyond_its_connection_limit_loses_its_oldest_waiting_one_with_a_503(server: MetricsServer) -> None:
    waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
               for _ in range(exporter.expose.server.MAX_PER_CLIENT)]
    try:
        answer = raw(server, b"GET /healthz HTTP/1.1\r\n\r\n")  # one more from the same address
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert waiting[0].recv(65536).startswith(b"HTTP/1.1 503 ")  # at once: the server gives it no more time
    finally:
        for sock in waiting:
            sock.close()


def test_malformed_target_is_a_400_not_a_logged_error(server: MetricsServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    answer = raw(server, b"GET http://[::1/metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and not caplog.records


def test_head_with_a_bad_header_gets_no_body(server: MetricsServer) -> None:
    answer = raw(server, b"HEAD /metrics HTTP/1.1\r\nno colon\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"\r\n\r\n")


def test_scrapes_between_changes_get_identical_bytes_and_the_gzip_is_the_plain_body(server: MetricsServer) -> None:
    def scrape(gzipped: bool) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gzipped else {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert int(response.getheader("Content-Length", "-1")) == len(body)
        assert response.getheader("Vary") == "Accept-Encoding"
        return response, body

    def cached_part(body: bytes) -> bytes:
        """All but the live lines appended per scrape (process_*, which move with the clock)."""
        return b"".join(line for line in body.splitlines(keepends=True) if b"process_" not in line)

    (packed_response, packed), (_, packed_again) = scrape(True), scrape(True)
    (plain_response, plain), (_, plain_again) = scrape(False), scrape(False)
    assert packed_response.getheader("Content-Encoding") == "gzip"
    assert plain_response.getheader("Content-Encoding") is None
    unpacked, unpacked_again = gzip.decompress(packed), gzip.decompress(packed_again)
    assert cached_part(unpacked) == cached_part(unpacked_again) == cached_part(plain) == cached_part(plain_again)
    assert b"process_cpu_seconds_total" in plain and b"conda_exporter_build_info" in plain
    assert zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(packed) == unpacked  # one gzip member
    assert len(packed) < len(plain) // 4


def test_process_metrics_follow_the_clock_and_the_gzip_is_whole(store: SnapshotStore) -> None:
    """process_* are at most LIVE_MAX_AGE old: reused within it (reading /proc per request cost three
    quarters of the throughput), rendered again after it."""
    live = LiveExposition(ExpositionCache(store))
    first_body = live.render()
    assert live.render() is first_body  # within LIVE_MAX_AGE: the same answer
    first = samples(first_body.decode())["process_cpu_seconds_total"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # burn CPU until the kernel's tick counts it
        sum(range(100_000))
        packed = live.render(gzip=True)
        later = samples(gzip.decompress(packed).decode())["process_cpu_seconds_total"]
        if later != first:
            break
    assert later != first
    text = gzip.decompress(packed).decode()
    assert text.startswith(ExpositionCache(store).render().decode()) and "conda_exporter_web_config_reloads" in text


@pytest.mark.parametrize(
    ("header", "accepted"),
    [("gzip", True), ("GZIP", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True),
     ("x-gzip", True), ("*", True), ("", False), ("identity", False), ("deflate", False),
     ("gzip;q=0", False), ("gzip;q=0, *", False), ("gzip;q=bogus", False), ("*;q=0", False)],
)
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_serves_on_ipv6(store: SnapshotStore) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        running = MetricsServer(make_app(store, "/metrics"), "::1", 0)
    except OSError as exc:  # no ::1 on this host's loopback
        pytest.skip(f"cannot listen on ::1: {exc}")
    running.start()
    try:
        conn = http.client.HTTPConnection("::1", running.port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        conn.close()
    finally:
        running.stop()


def test_a_post_with_a_body_still_reads_its_405(server: MetricsServer) -> None:
    body = b"x" * 500_000  # more than the server reads with the head
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body))
        with contextlib.suppress(OSError):  # the server may answer and stop reading before the end
            sock.sendall(body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    assert b"".join(chunks).startswith(b"HTTP/1.1 405 ")
