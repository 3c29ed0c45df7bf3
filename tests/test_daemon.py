"""The incremental daemon, end to end: a real subprocess, real inotify (or polling), real HTTP.

Each test changes the tree the way conda/pip do, then polls /metrics with a deadline until every
number equals the find/du oracle. No fixed sleeps.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.condaops import (
    create_env,
    install,
    metrics_match,
    mismatches,
    packages,
    pip_install,
    random_operation,
    remove,
)
from tests.exposition import samples
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch, free_port, poll, wait_ready

DEADLINE = 30.0


class Running:
    def __init__(self, proc: subprocess.Popen[str], port: int, root: Path) -> None:
        self.proc, self.port, self.root = proc, port, root

    def converge(self, what: str) -> str:
        def check() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}")
            return metrics_match(self.port, self.root)

        try:
            return poll(check, DEADLINE, what, interval=0.1)
        except AssertionError:
            text = fetch(f"http://127.0.0.1:{self.port}/metrics")[1]
            raise AssertionError(f"{what}: {mismatches(text, self.root)}") from None


def start(exporter_cmd: list[str], root: Path, *extra: str, debounce: float = 0.2) -> Running:
    """A real exporter daemon on ``root`` (one worker, ``debounce`` s), ready; no CONDA* variable of this
    session reaches it, and its HOME is beside the root."""
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_cmd, "--root", str(root), "--web.listen-address", f"127.0.0.1:{port}", "--watch.debounce",
         str(debounce), "--scan.workers", "1", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CONDA")}, "HOME": str(root.parent)},
    )
    try:
        wait_ready(proc, port)
    except AssertionError:
        proc.kill()
        proc.communicate()
        raise
    return Running(proc, port, root)


def stop(running: Running) -> str:
    """SIGTERM (a clean stop, which writes the state file if there is one); the process's log."""
    running.proc.terminate()
    return running.proc.communicate(timeout=10)[1]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_fixture_root(tmp_path / "conda")


@pytest.fixture(params=["inotify", "poll"])
def daemon(request: pytest.FixtureRequest, exporter_cmd: list[str], root: Path) -> Iterator[Running]:
    extra = ["--watch.mode", request.param, "--watch.poll-interval", "0.3"]
    running = start(exporter_cmd, root, *extra)
    yield running
    running.proc.terminate()
    running.proc.wait(10)


def _value(text: str, name: str) -> float:
    return sum(samples(text).get(name, {}).values())


def test_conda_and_pip_changes_show_up(daemon: Running) -> None:
    root = daemon.root
    text = daemon.converge("startup")
    mode = "poll" if "--watch.mode" in daemon.proc.args and "poll" in daemon.proc.args else "inotify"  # type: ignore[operator]
    assert samples(text)["conda_exporter_watch_mode"][(("mode", mode),)] == 1
    web, analysis = root / "envs" / "web", root / "envs" / "analysis"
    numpy = next(p for p in packages(root) if p.name.startswith("numpy"))
    install(web, numpy)
    daemon.converge("install numpy into web")
    remove(analysis, next((analysis / "conda-meta").glob("pandas*.json")))
    daemon.converge("remove pandas from analysis")
    pip_install(web, "pipthing", 33_333)
    daemon.converge("pip install into web")
    shutil.rmtree(root / "envs" / "analysis")  # files shared only with analysis become web's own
    daemon.converge("delete env analysis")
    create_env(root, "fresh", numpy)
    text = daemon.converge("create env fresh")
    scans = samples(text)["conda_exporter_scans_total"]
    trigger = "poll" if mode == "poll" else "event"
    assert scans[(("result", "success"), ("trigger", trigger))] >= 1
    assert _value(text, "conda_exporter_scans_total") < 40  # incremental: no rescan per event


def test_change_visible_within_debounce_plus_a_second(exporter_cmd: list[str], root: Path) -> None:
    running = start(exporter_cmd, root)
    try:
        running.converge("startup")
        start_at = time.monotonic()
        pip_install(root / "envs" / "web", "latency", 10_000)
        running.converge("pip write")
        elapsed = time.monotonic() - start_at
        assert elapsed < 0.2 + 1.0 + 1.0, elapsed  # debounce + 1 s target, +1 s for the oracle's own cost
        text = fetch(f"http://127.0.0.1:{running.port}/metrics")[1]
        assert _value(text, "conda_exporter_events_total") >= 1
        assert _value(text, "conda_exporter_watches") >= 5
    finally:
        running.proc.terminate()
        running.proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_end_equal_to_a_fresh_full_scan(exporter_cmd: list[str], root: Path, seed: int) -> None:
    running = start(exporter_cmd, root)
    try:
        running.converge("startup")
        rng = random.Random(seed)
        counter = [0]
        done = [random_operation(rng, root, counter) for _ in range(12)]
        text = running.converge(f"after {done}")
        once = subprocess.run(
            [*exporter_cmd, "--once", "--root", str(root)], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        for name in ("conda_env_unique_bytes", "conda_env_shared_bytes", "conda_pkgs_unreferenced_bytes",
                     "conda_root_bytes", "conda_root_apparent_bytes"):
            assert samples(text)[name] == samples(once)[name], (name, done)
    finally:
        running.proc.terminate()
        running.proc.wait(10)
