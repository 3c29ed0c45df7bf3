"""The command line as a user meets it: errors, help, env vars, and the served endpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from exporter.config import Settings, flag_of
from tests.exposition import by_label, samples
from tests.httpwait import fetch, free_port, wait_ready
from tests.oracle import du_bytes


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    env = {**clean, "HOME": "/nonexistent", **env}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_missing_root_is_one_line_and_exit_2(exporter_cmd: list[str], tmp_path: Path) -> None:
    proc = run([*exporter_cmd, "--once", "--root", str(tmp_path / "nope")])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_dir_that_is_not_a_root_is_refused(exporter_cmd: list[str], tmp_path: Path) -> None:
    proc = run([*exporter_cmd, "--once", "--root", str(tmp_path)])
    assert proc.returncode == 2 and "not a conda root" in proc.stderr


def test_bad_option_values_exit_2(exporter_cmd: list[str], fixture_root: Path) -> None:
    for args in (["--scan.workers", "0"], ["--web.listen-address", "nope"], ["--bogus"], ["--log.level", "loud"]):
        proc = run([*exporter_cmd, "--once", "--root", str(fixture_root), *args])
        assert proc.returncode == 2, args
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_bad_env_var_exit_2(exporter_cmd: list[str], fixture_root: Path) -> None:
    proc = run([*exporter_cmd, "--once", "--root", str(fixture_root)], CONDA_EXPORTER_SCAN_WORKERS="many")
    assert proc.returncode == 2 and "--scan.workers" in proc.stderr


def test_no_root_found_says_where_it_looked(exporter_cmd: list[str]) -> None:
    proc = run([*exporter_cmd, "--once"])
    assert proc.returncode == 2 and "no conda root found" in proc.stderr and "--root" in proc.stderr


def test_help_lists_every_flag_and_env_var(exporter_cmd: list[str]) -> None:
    proc = run([*exporter_cmd, "--help"])
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for name in Settings.model_fields:
        assert flag_of(name) in text and f"CONDA_EXPORTER_{name.upper()}" in text, name


def test_roots_from_env_var_and_autodetect(exporter_cmd: list[str], fixture_root: Path) -> None:
    by_env = run([*exporter_cmd, "--once"], CONDA_EXPORTER_ROOTS=str(fixture_root))
    assert by_env.returncode == 0, by_env.stderr
    detected = run([*exporter_cmd, "--once"], CONDA_PREFIX=str(fixture_root / "envs" / "web"))
    assert detected.returncode == 0 and "auto-detected conda root" in detected.stderr
    for out in (by_env.stdout, detected.stdout):
        assert list(samples(out)["conda_root_bytes"].values()) == [du_bytes(fixture_root)]


def test_serves_metrics_health_ready_and_landing(exporter_cmd: list[str], fixture_root: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_cmd, "--root", str(fixture_root), "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_ready(proc, port)
        status, body = fetch(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert by_label(body, "conda_env_unique_bytes", "env").keys() >= {"base", "web", "analysis"}
        assert fetch(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        status, page = fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and 'href="/metrics"' in page
        assert fetch(f"http://127.0.0.1:{port}/nope")[0] == 404
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_demo_serves_real_numbers(exporter_cmd: list[str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_cmd, "demo", "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_ready(proc, port)
        body = fetch(f"http://127.0.0.1:{port}/metrics")[1]
        unique = by_label(body, "conda_env_unique_bytes", "env")
        assert set(unique) == {"base", "analysis", "science", "web"} and all(v > 0 for v in unique.values())
        assert list(samples(body)["conda_pkgs_unreferenced_packages"].values()) == [1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
