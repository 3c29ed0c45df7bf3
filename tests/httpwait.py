"""Start the exporter as a real subprocess and talk to it over real HTTP, polling with deadlines."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def poll(check: Callable[[], T | None], deadline_seconds: float, what: str, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something other than None, or fail after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, urllib.error.URLError) as exc:  # server not listening yet
            last_error = exc
            result = None
        if result is not None:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_seconds} s waiting for {what}; last error: {last_error}")


def wait_ready(proc: subprocess.Popen[str], port: int, deadline_seconds: float = 60) -> None:
    def ready() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited with {proc.returncode}")
        return True if fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200 else None

    poll(ready, deadline_seconds, "/readyz")


def start_service(argv: list[str], log: Path, ready_url: str, deadline_seconds: float = 30) -> subprocess.Popen[bytes]:
    """Start a server binary (Prometheus, Alertmanager, VictoriaMetrics, node_exporter) with its output in ``log``
    and wait until ``ready_url`` answers 200; fail with the log's tail if it exits first."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    name = Path(argv[0]).name

    def ready() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return True if fetch(ready_url)[0] == 200 else None

    try:
        poll(ready, deadline_seconds, f"{name} {ready_url}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc
