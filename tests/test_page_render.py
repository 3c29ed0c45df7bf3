"""The page ``/`` over real HTTP without a browser: nothing but a "first scan running" page before the first
scan, one render per change of the store (the same bytes for every request in between, gzip of exactly
them), and nothing in it that moves with the clock."""

from __future__ import annotations

import gzip
import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.discover.roots import discover_root
from exporter.expose.app import make_app
from exporter.expose.server import MetricsServer
from exporter.model import Snapshot
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.options import scan_options

NUMBER = re.compile(rb"\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)\b")


@pytest.fixture(scope="module")
def scanned(fixture_root: Path) -> Snapshot:
    return full_scan([discover_root(str(fixture_root))], scan_options(workers=1))


@pytest.fixture
def store_and_server() -> Iterator[tuple[SnapshotStore, MetricsServer]]:
    store = SnapshotStore()
    server = MetricsServer(make_app(store, "/metrics"), "127.0.0.1", 0)
    server.start()
    yield store, server
    server.stop()


def get(server: MetricsServer, path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_before_the_first_scan_the_page_says_so_and_shows_no_number(
    store_and_server: tuple[SnapshotStore, MetricsServer], scanned: Snapshot
) -> None:
    store, server = store_and_server
    store.update_watch(watch_mode="inotify", watches=12)  # the daemon sets these before its first scan ends
    response, body = get(server, "/")
    assert response.status == 503 and response.getheader("Retry-After") == "5"
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b"First scan running" in body and b"/readyz" in body
    assert not NUMBER.search(body) and b"<table" not in body  # never half numbers
    assert response.getheader("Content-Security-Policy", "").startswith("default-src 'none'")
    assert get(server, "/readyz")[0].status == 503  # the same state as /readyz
    store.publish(scanned, "startup")
    response, body = get(server, "/")
    assert response.status == 200 and b'<table id="envs"' in body and NUMBER.search(body)


def test_one_render_per_change_and_the_gzip_is_the_same_page(scanned: Snapshot) -> None:
    store = SnapshotStore()
    store.publish(scanned, "startup")
    app = make_app(store, "/metrics")
    first = app("/", {})
    assert first.status == 200
    assert app("/", {}).body is first.body  # the very same bytes object: not rendered again
    zipped = app("/", {"accept-encoding": "gzip"})
    assert ("Content-Encoding", "gzip") in zipped.headers and gzip.decompress(zipped.body) == first.body
    assert app("/", {"accept-encoding": "gzip, deflate"}).body is zipped.body  # compressed once, too
    assert b" ago" not in first.body  # relative times are the reader's script's job: the body never goes stale
    assert b"polling" not in first.body
    store.update_watch(watch_mode="poll")  # any change of the store renders it anew
    second = app("/", {})
    assert second.body is not first.body and b"Watching <b data-key=\"watch-mode\">polling</b>" in second.body
    assert app("/", {}).body is second.body


def test_head_of_the_page_has_its_headers_and_no_body(
    store_and_server: tuple[SnapshotStore, MetricsServer], scanned: Snapshot
) -> None:
    store, server = store_and_server
    store.publish(scanned, "startup")
    get_response, body = get(server, "/")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert head.read() == b""
    conn.close()
    assert head.status == get_response.status == 200
    assert head.getheader("Content-Length") == get_response.getheader("Content-Length") == str(len(body))
    assert head.getheader("Content-Security-Policy") == get_response.getheader("Content-Security-Policy")
