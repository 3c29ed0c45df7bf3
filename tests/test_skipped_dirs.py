"""What discovery leaves out is said, with the reason (issue 18, should fix 2): a real chmod 000 env dir (met by
an unprivileged exporter: root reads everything, so the exporter runs as nobody through setpriv) and real
symlinks for envs/, pkgs/ and an env. Each is logged once, not at every rediscovery, and counted in
``conda_exporter_skipped_dirs{reason}``.

The fault before: the unreadable env was logged as "without conda-meta/" (the cause was permission denied) at
every discovery, and the symlinks disappeared without a log line or a metric.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.exposition import by_label
from tests.httpwait import fetch, free_port, poll, wait_ready
from tests.test_bad_input import make_env

pytestmark = pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) needed to drop root")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory an unprivileged user can read (pytest's tmp dirs are private to root)."""
    top = Path(os.environ.get("TMPDIR", "/tmp")) / f"cee-skip-{os.getpid()}-{os.urandom(4).hex()}"
    top.mkdir(mode=0o755)
    yield top
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    shutil.rmtree(top)


def build(base: Path) -> tuple[Path, Path]:
    """``one``: envs good, locked (chmod 000), plain (no conda-meta/), linked (a symlink to an env elsewhere);
    ``two``: a base env whose envs/ and pkgs/ are symlinks to real dirs elsewhere."""
    one, two, elsewhere = base / "one", base / "two", base / "elsewhere"
    make_env(one)
    (one / "pkgs").mkdir()
    make_env(one / "envs" / "good")
    make_env(one / "envs" / "locked")
    os.chmod(one / "envs" / "locked", 0o000)
    (one / "envs" / "plain" / "bin").mkdir(parents=True)
    make_env(elsewhere / "env")
    (one / "envs" / "linked").symlink_to(elsewhere / "env")
    make_env(two)
    (elsewhere / "envs").mkdir()
    (elsewhere / "pkgs").mkdir()
    (two / "envs").symlink_to(elsewhere / "envs")
    (two / "pkgs").symlink_to(elsewhere / "pkgs")
    return one, two


def env_shown(port: int, name: str) -> bool | None:
    return True if name in by_label(fetch(f"http://127.0.0.1:{port}/metrics")[1], "conda_env_files", "env") else None


def skipped(text: str) -> dict[str, float]:
    return by_label(text, "conda_exporter_skipped_dirs", "reason")


def test_skipped_dirs_are_counted_by_reason_and_logged_with_it(exporter_cmd: list[str], base: Path) -> None:
    one, two = build(base)
    proc = subprocess.run([*NOBODY, *exporter_cmd, "--once", "--root", str(one), "--root", str(two)],
                          capture_output=True, text=True, env={**os.environ, "HOME": "/"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert skipped(proc.stdout) == {"no_conda_meta": 1, "permission": 1, "symlink": 3, "unreadable": 0, "missing": 0}
    assert set(by_label(proc.stdout, "conda_env_files", "env")) == {"base", "good"}
    assert by_label(proc.stdout, "conda_root_ignored_dirs", "root") == {str(one): 2, str(two): 0}  # unchanged
    lines = proc.stderr.splitlines()
    locked = [line for line in lines if "envs/locked" in line and "skipping" in line]
    assert len(locked) == 1 and "permission denied" in locked[0] and "conda-meta" not in locked[0].split(":", 3)[-1]
    for path in (one / "envs" / "linked", two / "envs", two / "pkgs"):
        said = [line for line in lines if f"'{path}'" in line]
        assert len(said) == 1 and "symlink" in said[0], (path, said)
    assert sum(f"'{one / 'envs' / 'plain'}'" in line for line in lines) == 1


def test_a_skipped_dir_is_logged_once_not_at_every_rediscovery(exporter_cmd: list[str], base: Path) -> None:
    one, _ = build(base)
    port = free_port()
    proc = subprocess.Popen(
        [*NOBODY, *exporter_cmd, "--root", str(one), "--web.listen-address", f"127.0.0.1:{port}",
         "--watch.mode", "inotify", "--watch.debounce", "0.2", "--scan.workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HOME": "/"},
    )
    try:
        wait_ready(proc, port)
        for name in ("new1", "new2", "new3"):  # each new env makes the daemon discover the root again
            make_env(one / "envs" / name)
            poll(partial(env_shown, port, name), 30, f"env {name}")
        text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
        assert skipped(text)["permission"] == 1 and skipped(text)["symlink"] == 1
        os.chmod(one / "envs" / "locked", 0o755)  # fixed: an env again, no longer skipped
        make_env(one / "envs" / "new4")
        poll(lambda: env_shown(port, "locked"), 30, "env locked")
        assert skipped(fetch(f"http://127.0.0.1:{port}/metrics")[1])["permission"] == 0
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[1]
    said = [line for line in log.splitlines() if f"skipping '{one / 'envs' / 'locked'}'" in line]
    assert len(said) == 1, said  # four rediscoveries, one line (the walks' own scan errors are logged apart)
