"""The daemon past the kernel's inotify limits, single envs, and SIGHUP.

The limits are lowered for real through /proc/sys/fs/inotify (root only; restored afterwards), so the
fallbacks meet a real ENOSPC and a real queue overflow rather than a mock.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.condaops import install, packages, pip_install
from tests.exposition import samples
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch, free_port, poll, wait_ready
from tests.oracle import pkgs_oracle, tree_numbers
from tests.test_daemon import DEADLINE, Running

INOTIFY = Path("/proc/sys/fs/inotify")


@contextmanager
def inotify_limit(name: str, value: int) -> Iterator[None]:
    path = INOTIFY / name
    old = path.read_text()
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        pytest.skip(f"cannot lower {path} here (needs root in the initial user namespace): {exc}")
    try:
        yield
    finally:
        path.write_text(old)


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Process ``pid`` stopped (SIGSTOP, every thread seen stopped) for the block: it reads no inotify
    event meanwhile, so a burst past ``max_queued_events`` overflows its queue for certain."""

    def stopped() -> bool | None:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return True if all((t / "stat").read_text().rpartition(")")[2].split()[0] in "tT" for t in tasks) else None

    os.kill(pid, signal.SIGSTOP)
    try:
        poll(stopped, DEADLINE, f"process {pid} to stop")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def inotify_watches_in_use() -> int:
    """Watches held by every inotify instance on the machine (the per-user limit counts them all)."""
    count = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            count += sum(1 for line in fdinfo.read_text().splitlines() if line.startswith("inotify wd:"))
        except OSError:
            continue
    return count


def launch(exporter_cmd: list[str], root: Path, home: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    proc = subprocess.Popen(
        [*exporter_cmd, "--root", str(root), "--web.listen-address", f"127.0.0.1:{port}", "--watch.debounce",
         "0.2", "--scan.workers", "1", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**env, "HOME": str(home)},
    )
    return proc, port


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    return proc.communicate(timeout=10)[1]


def metric(port: int, name: str, **labels: str) -> float:
    text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
    return sum(v for k, v in samples(text).get(name, {}).items() if labels.items() <= dict(k).items())


def env_matches(port: int, prefix: Path) -> bool | None:
    """True once the env's unique and shared bytes on /metrics equal the oracle's."""
    text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
    got = {dict(k)["prefix"]: v for k, v in samples(text).get("conda_env_unique_bytes", {}).items()}
    expected = tree_numbers(prefix)
    return True if got.get(str(prefix)) == expected.unique_bytes else None


def cache_matches(port: int, root: Path) -> bool | None:
    """True once every package-cache metric of the root equals the conda-rules oracle."""
    text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
    got = samples(text)
    expected = pkgs_oracle(root / "pkgs")
    return True if all(list(got[m].values()) == [v] for m, v in expected.items()) else None


def launch_ready(exporter_cmd: list[str], root: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start the daemon and wait until it is ready (stopping it if it never gets there)."""
    proc, port = launch(exporter_cmd, root, tmp_path, *args)
    try:
        wait_ready(proc, port)
    except AssertionError:
        stop(proc)
        raise
    return proc, port


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_fixture_root(tmp_path / "conda")


def test_watch_limit_falls_back_to_polling(exporter_cmd: list[str], root: Path, tmp_path: Path) -> None:
    with inotify_limit("max_user_watches", inotify_watches_in_use() + 2):
        proc, port = launch_ready(exporter_cmd, root, tmp_path, "--watch.poll-interval", "0.3")
    try:
        assert metric(port, "conda_exporter_watch_limit_reached") == 1
        assert metric(port, "conda_exporter_watch_mode", mode="poll") == 1
        pip_install(root / "envs" / "web", "late", 40_000)
        running = Running(proc, port, root)
        running.converge("a pip install seen by polling after the watch limit")
    finally:
        log = stop(proc)
    assert "falling back to polling" in log


def test_queue_overflow_is_counted_and_recovered(exporter_cmd: list[str], root: Path, tmp_path: Path) -> None:
    with inotify_limit("max_queued_events", 16):  # read when the inotify instance is created
        proc, port = launch_ready(exporter_cmd, root, tmp_path, "--watch.mode", "inotify")
    try:
        assert metric(port, "conda_exporter_queue_overflows_total") == 0
        assert metric(port, "conda_exporter_scans_total", trigger="reconcile") == 0
        site = root / "envs" / "analysis" / "lib" / "python3.11" / "site-packages"
        with frozen(proc.pid):  # a pip install of many small files while the daemon reads nothing
            (site / "burst").mkdir()
            for i in range(2000):
                (site / f"burst_{i}.py").write_bytes(b"x" * 100)
        poll(lambda: True if metric(port, "conda_exporter_queue_overflows_total") >= 1 else None, DEADLINE,
             "an overflow to be counted")
        Running(proc, port, root).converge("numbers after the overflow's reconcile scan")
        assert metric(port, "conda_exporter_scans_total", trigger="reconcile") >= 1
    finally:
        stop(proc)


def test_env_outside_any_root_is_watched(exporter_cmd: list[str], root: Path, tmp_path: Path) -> None:
    env = tmp_path / "project" / ".pixi" / "envs" / "default"
    (env / "conda-meta").mkdir(parents=True)
    install(env, packages(root)[0])
    proc, port = launch(exporter_cmd, root, tmp_path, "--env", str(env))
    try:
        wait_ready(proc, port)
        assert metric(port, "conda_env_files", prefix=str(env), root="") == tree_numbers(env).files
        unused = next(p for p in packages(root) if p.name.startswith("matplotlib-"))
        assert metric(port, "conda_pkgs_unreferenced_packages") == 1  # matplotlib, linked nowhere yet
        install(env, unused)
        pip_install(env, "extra", 25_000)
        poll(lambda: env_matches(port, env), DEADLINE, "the single env's install")
        poll(lambda: cache_matches(port, root), DEADLINE, "the root's cache, which the env now links from")
        assert metric(port, "conda_pkgs_unreferenced_packages") == 0
    finally:
        stop(proc)


def test_sighup_rediscovers_conda_configuration(exporter_cmd: list[str], root: Path, tmp_path: Path) -> None:
    proc, port = launch(exporter_cmd, root, tmp_path)
    try:
        wait_ready(proc, port)
        extra = tmp_path / "team-envs" / "shared"
        (extra / "conda-meta").mkdir(parents=True)
        install(extra, packages(root)[1])
        (root / ".condarc").write_text(f"envs_dirs: [{extra.parent}]\n")
        assert metric(port, "conda_env_files", prefix=str(extra)) == 0  # not configured when started
        proc.send_signal(signal.SIGHUP)
        poll(lambda: env_matches(port, extra), DEADLINE, "the env named by the new .condarc")
        for prefix in (root / "envs").iterdir():
            if (prefix / "conda-meta").is_dir():
                assert env_matches(port, prefix), prefix
    finally:
        log = stop(proc)
    assert "SIGHUP" in log


def test_an_install_walks_only_the_cache_chunk_it_touched(exporter_cmd: list[str], tmp_path: Path) -> None:
    """A cache of 130 packages is walked in 3 chunks; linking one package walks its chunk only."""
    root = tmp_path / "conda"
    (root / "conda-meta").mkdir(parents=True)
    for i in range(130):
        package = root / "pkgs" / f"p{i:03d}-1.0-0"
        (package / "info").mkdir(parents=True)
        (package / "info" / "index.json").write_text("{}")
        (package / "lib").mkdir()
        (package / "lib" / f"p{i:03d}.so").write_bytes(b"x" * (4096 + i))
    env = root / "envs" / "e"
    (env / "conda-meta").mkdir(parents=True)
    install(env, root / "pkgs" / "p000-1.0-0")
    proc, port = launch(exporter_cmd, root, tmp_path, "--log.level", "info")
    try:
        wait_ready(proc, port)
        install(env, root / "pkgs" / "p100-1.0-0")
        Running(proc, port, root).converge("the install, with one chunk walked again")
    finally:
        log = stop(proc)
    assert "0 whole cache(s), 1 cache chunk(s)" in log, log[-2000:]
