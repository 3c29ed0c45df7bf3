"""Shared pieces of the deploy tests: paths, a small conda root, starting the exporter as a deploy file would."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deploytools import (
    DEPLOY,
    REPO,
)
from tests.exposition import samples
from tests.httpwait import fetch, poll

BIN = Path(sys.executable).parent
EXPORTER = BIN / "conda-env-exporter"
UNIT = DEPLOY / "systemd" / "conda-env-exporter.service"
ENV_FILE = DEPLOY / "systemd" / "conda-env-exporter.env"
DOCKERFILE = REPO / "Dockerfile"
K8S = DEPLOY / "kubernetes"
COMPOSE_DIR = DEPLOY / "compose"
RULES_DIR = DEPLOY / "prometheus" / "rules"
PORT = "9867"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest still-common and newest bundled schemas


def tool(name: str) -> str:
    """A tool from the test venv's bin dir, else PATH; fails (not skips) when missing."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name} not found: tests/run installs it"
    return str(found)


def clean_env() -> dict[str, str]:
    """What a service manager / container runtime starts with: no CONDA_*, no user's HOME."""
    return {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}


# ---------------------------------------------------------------- a small conda root


def exporter_help() -> str:
    env = {**clean_env(), "COLUMNS": "250"}
    return subprocess.run([str(EXPORTER), "--help"], capture_output=True, text=True, timeout=60, env=env).stdout


def exporter_has_state_file() -> bool:
    return "--state.file" in exporter_help()


def assert_known_env_vars(env: dict[str, str], where: str) -> None:
    """Every CONDA_EXPORTER_* variable a deploy file sets is one the exporter reads: a typo would be ignored."""
    known = set(re.findall(r"CONDA_EXPORTER_[A-Z_]+", exporter_help()))
    known.add("CONDA_EXPORTER_STATE_FILE")  # in the contract; --help lists it once the daemon has it
    unknown = sorted(k for k in env if k.startswith("CONDA_EXPORTER_") and k not in known)
    assert not unknown, f"{where}: not exporter settings: {unknown}"


def substitute(value: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        value = value.replace(old, new)
    return value


class Running:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.argv, self.env = argv, env
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""


def scrape_until_env_seen(run: Running, port: int, root: Path) -> dict[str, Any]:
    """Poll /metrics (deadline, no fixed sleep) until env x of ``root`` is exported."""

    def check() -> dict[str, Any] | None:
        if run.proc.poll() is not None:
            raise AssertionError(f"exporter exited {run.proc.returncode}: {run.stop()}")
        status, body = fetch(f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            return None
        files = samples(body).get("conda_env_files", {})
        for labels, value in files.items():
            if dict(labels).get("env") == "x" and dict(labels).get("root") == str(root):
                return {"body": body, "files": value}
        return None

    return poll(check, 60, f"env x of {root} on :{port}/metrics")


def assert_serves(run: Running, port: int, root: Path) -> None:
    seen = scrape_until_env_seen(run, port, root)
    assert seen["files"] >= 2  # tiny.so (hardlinked from pkgs/) + own.txt
    assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert poll(lambda: True if fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200 else None, 30, "/readyz")


