"""Shared fixtures: the exporter command and fixture roots built on the real filesystem."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.discover.roots import discover_root
from exporter.expose.app import make_app
from exporter.expose.server import MetricsServer
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.deployrun import DOCKERFILE, PORT, Running, clean_env, substitute
from tests.deployrun import EXPORTER as EXPORTER_PATH
from tests.deploytools import Container, container_of
from tests.fixture_tree import build_fixture_root
from tests.httpwait import free_port
from tests.options import scan_options
from tests.realconda import RealRoot, build_real_conda_root, unmount

EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))


@pytest.fixture
def python_walker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scans run in this process use exporter.scan.walk's Python loop instead of the native walker."""
    monkeypatch.setattr(exporter.scan.walk, "_native", None)
    monkeypatch.setattr(exporter.scan.walk, "WALKER", "python")


@pytest.fixture(scope="session")
def exporter_cmd() -> list[str]:
    """The installed console script, from the interpreter running the tests."""
    assert Path(EXPORTER).exists(), f"{EXPORTER} missing: install the package first"
    return [EXPORTER]


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A read-only-by-convention fixture root shared by tests that do not change it."""
    base = tmp_path_factory.mktemp("fixture")
    root = build_fixture_root(base / "conda")
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def store(fixture_root: Path) -> SnapshotStore:
    """A store holding a full scan of the fixture root, as the HTTP tests serve it."""
    store = SnapshotStore()
    store.publish(full_scan([discover_root(str(fixture_root))], scan_options(workers=1)), "startup")
    return store


@pytest.fixture
def server(store: SnapshotStore) -> Iterator[MetricsServer]:
    """The HTTP front serving ``store`` on a free loopback port, plain HTTP."""
    running = MetricsServer(make_app(store, "/metrics"), "127.0.0.1", 0)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def real_conda_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRoot]:
    """Envs written by py-rattler from packages built offline (tests/realconda.py), built once."""
    base = tmp_path_factory.mktemp("realconda")
    built = build_real_conda_root(base)
    yield built
    if built.copied_cache is not None:
        unmount(built.copied_cache.parent)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conda-meta/, envs/x/conda-meta/ and pkgs/, with one package file hardlinked into env x."""
    root = tmp_path_factory.mktemp("deployroot") / "conda"
    (root / "conda-meta").mkdir(parents=True)
    (root / "conda-meta" / "history").write_text("")
    pkg = root / "pkgs" / "tiny-1.0-0"
    (pkg / "info").mkdir(parents=True)
    (pkg / "lib").mkdir()
    (pkg / "lib" / "tiny.so").write_bytes(b"\x7fELF" + b"t" * 8000)
    env = root / "envs" / "x"
    (env / "conda-meta").mkdir(parents=True)
    (env / "conda-meta" / "history").write_text("")
    (env / "lib").mkdir()
    os.link(pkg / "lib" / "tiny.so", env / "lib" / "tiny.so")
    (env / "lib" / "own.txt").write_bytes(b"o" * 3000)
    return root


@pytest.fixture
def container_run(small_root: Path, tmp_path: Path) -> Iterator[tuple[Container, Running, int]]:
    """The exporter as `docker run -v ROOT:/conda:ro -v STATE:/var/lib/conda-env-exporter` starts it."""
    container = container_of(DOCKERFILE)
    port = free_port()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    volume = container.volumes[0]
    subs = {volume: str(state_dir), f":{PORT}": f"127.0.0.1:{port}"}
    env = {**clean_env(), **{k: substitute(v, subs) for k, v in container.env.items()}}
    assert env["CONDA_EXPORTER_ROOTS"] == "/conda"
    env["CONDA_EXPORTER_ROOTS"] = str(small_root)  # the bind mount
    argv = [substitute(a, subs) for a in container.argv]
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    assert argv[0] == str(EXPORTER_PATH)
    run = Running(argv, env, tmp_path)
    try:
        yield container, run, port
    finally:
        run.stop()
