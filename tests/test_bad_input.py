"""Bad input never crashes a scan nor corrupts other envs' numbers; it is counted and logged."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.discover.roots import discover_root
from exporter.scan.walk import errno_kind, error_kind
from exporter.snapshot.full import full_scan
from tests.exposition import by_label, samples
from tests.options import scan_options
from tests.oracle import tree_numbers

WEIRD_NAMES = [b"with space", b'quo"te', b"new\nline", b"back\\slash", b"latin1-\xe9\xff"]


def unescape(label: str) -> bytes:
    """The file name behind a label value, decoded by the README's rule (not the exporter's code): ``\\\\``
    is a backslash, ``\\xNN`` the byte NN, anything else its UTF-8."""
    out, i = bytearray(), 0
    while i < len(label):
        if label[i] == "\\":
            if label[i + 1] == "\\":
                out += b"\\"
                i += 2
                continue
            assert label[i + 1] == "x", label
            out.append(int(label[i + 2 : i + 4], 16))
            i += 4
            continue
        out += label[i].encode()
        i += 1
    return bytes(out)


def test_names_that_look_alike_after_escaping_stay_two_series(
    exporter_cmd: list[str], world_readable_root: Path
) -> None:
    """Issue 18 item 9: ``a\\xff`` typed out and ``a`` + the byte 0xFF were one series before."""
    root = world_readable_root
    twins = [b"a\\xff", b"a\xff"]
    for raw in twins:
        make_env(Path(os.fsdecode(os.path.join(os.fsencode(root), b"envs", raw))))
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    envs = by_label(proc.stdout, "conda_env_files", "env")
    assert len(envs) == 4, envs  # base, good and both twins
    assert {unescape(label) for label in envs} >= set(twins)


def make_env(prefix: Path, payload: bytes = b"p" * 7000) -> None:
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("")
    (prefix / "lib").mkdir()
    (prefix / "lib" / "payload").write_bytes(payload)


@pytest.fixture
def world_readable_root() -> Iterator[Path]:
    """A root that an unprivileged user can read (pytest's tmp dirs are private to root)."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"cee-bad-{os.getpid()}-{os.urandom(4).hex()}"
    base.mkdir(mode=0o755)
    root = base / "conda"
    make_env(root)
    make_env(root / "envs" / "good")
    (root / "pkgs").mkdir()
    yield root
    for dirpath, dirnames, _ in os.walk(base):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(base)


def test_weird_env_names_are_exported_and_parse(exporter_cmd: list[str], world_readable_root: Path) -> None:
    root = world_readable_root
    for raw in WEIRD_NAMES:
        make_env(Path(os.fsdecode(os.path.join(os.fsencode(root), b"envs", raw))))
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    envs = set(by_label(proc.stdout, "conda_env_files", "env"))
    assert {unescape(label) for label in envs} == {*WEIRD_NAMES, b"good", b"base"}  # every name, recoverable
    promtool = shutil.which("promtool")
    assert promtool
    check = subprocess.run([promtool, "check", "metrics"], input=proc.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    good = tree_numbers(root / "envs" / "good")
    assert by_label(proc.stdout, "conda_env_unique_bytes", "env")["good"] == good.unique_bytes


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) needed to drop root")
def test_unreadable_dir_is_counted_and_others_stay_right(exporter_cmd: list[str], world_readable_root: Path) -> None:
    root = world_readable_root
    broken = root / "envs" / "broken"
    make_env(broken)
    (broken / "secret").mkdir()
    (broken / "secret" / "file").write_bytes(b"s" * 4096)
    os.chmod(broken / "secret", 0o000)
    cmd = [*exporter_cmd, "--once", "--root", str(root)]
    if os.geteuid() == 0:  # root reads everything: run the scan as nobody to meet a real EACCES
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HOME": "/"})
    assert proc.returncode == 0, proc.stderr
    errors = by_label(proc.stdout, "conda_env_scan_errors", "env")
    assert errors["broken"] == 1 and errors["good"] == 0
    assert samples(proc.stdout)["conda_exporter_scan_errors_total"][(("kind", "permission"),)] == 1
    assert "permission" in proc.stderr and "secret" in proc.stderr  # the log line names the path
    good = tree_numbers(root / "envs" / "good")
    assert by_label(proc.stdout, "conda_env_unique_bytes", "env")["good"] == good.unique_bytes
    # what could be read of the broken env is still counted: everything but the secret dir's contents
    expected = tree_numbers(broken, [broken / "secret"])
    secret_dir_blocks = os.lstat(broken / "secret").st_blocks * 512
    assert by_label(proc.stdout, "conda_env_unique_bytes", "env")["broken"] == expected.unique_bytes + secret_dir_blocks


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) needed to drop root")
def test_listable_but_unsearchable_dir_counts_each_entry(exporter_cmd: list[str], world_readable_root: Path) -> None:
    """A directory with read but no search permission lists its names but cannot stat them: a real
    per-entry failure (the path the walkers take for a file deleted between listing and stat)."""
    root = world_readable_root
    odd = root / "envs" / "odd"
    make_env(odd)
    (odd / "listed").mkdir()
    for name in ("a", "b", "c"):
        (odd / "listed" / name).write_bytes(b"x" * 100)
    os.chmod(odd / "listed", 0o444)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *exporter_cmd, "--once", "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HOME": "/"})
    assert proc.returncode == 0, proc.stderr
    assert by_label(proc.stdout, "conda_env_scan_errors", "env")["odd"] == 3
    for name in ("a", "b", "c"):
        assert repr(str(odd / "listed" / name)) in proc.stderr  # each path named in a log line
    assert by_label(proc.stdout, "conda_env_files", "env")["odd"] == 2  # history and payload
    good = tree_numbers(root / "envs" / "good")
    assert by_label(proc.stdout, "conda_env_unique_bytes", "env")["good"] == good.unique_bytes


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.EACCES, "permission"), (errno.EPERM, "permission"), (errno.ENOENT, "vanished"),
     (errno.ENOTDIR, "vanished"), (errno.ELOOP, "vanished"), (errno.EIO, "transient"), (errno.ESTALE, "transient"),
     (errno.ETIMEDOUT, "transient"), (errno.ENOTCONN, "transient"), (errno.ENAMETOOLONG, "io")],
)
def test_errno_kinds(code: int, kind: str) -> None:
    """Both walkers classify errors by errno (the native one reports only the number)."""
    assert errno_kind(code) == kind
    assert error_kind(OSError(code, os.strerror(code))) == kind


class _VanishingScandir:
    """Fault injection with a real deletion: removes ``victim`` after its directory was listed and
    before its entry is stat-ed, which a concurrent ``conda remove`` can do but not on cue."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim
        self.real = os.scandir

    def __call__(self, fd: Any) -> Any:
        entries = list(self.real(fd))
        here = isinstance(fd, int) and os.path.samestat(os.fstat(fd), os.stat(self.victim.parent))
        if here and self.victim.exists():
            self.victim.unlink()

        class _Listing:
            def __enter__(self) -> Iterator[os.DirEntry[str]]:
                return iter(entries)

            def __exit__(self, *exc: object) -> None:
                return None

        return _Listing()


def test_file_vanishing_mid_scan_is_counted(
    world_readable_root: Path, monkeypatch: pytest.MonkeyPatch, python_walker: None
) -> None:
    root = world_readable_root
    victim = root / "envs" / "good" / "lib" / "payload"
    monkeypatch.setattr(os, "scandir", _VanishingScandir(victim))
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    by_env = {e.name: e for e in snapshot.envs}
    assert [e.kind for e in by_env["good"].usage.errors] == ["vanished"]
    assert by_env["good"].usage.files == 1  # the history file only
    assert by_env["base"].usage.unique_bytes == tree_numbers(root, [root / "envs", root / "pkgs"]).unique_bytes


def test_directory_vanishing_before_open_is_counted(
    world_readable_root: Path, monkeypatch: pytest.MonkeyPatch, python_walker: None
) -> None:
    root = world_readable_root
    doomed = root / "envs" / "good" / "lib"
    real_open = os.open
    removed: list[Path] = []

    def open_after_removal(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # the walker opens a directory by name from its parent's fd (dir_fd)
        parent = kwargs.get("dir_fd")
        opened = os.path.join(os.readlink(f"/proc/self/fd/{parent}"), path) if parent is not None else os.fspath(path)
        if opened == str(doomed) and not removed:
            removed.append(doomed)
            monkeypatch.undo()  # shutil.rmtree opens directories too
            shutil.rmtree(doomed)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_removal)
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    good = next(e for e in snapshot.envs if e.name == "good")
    assert [(e.kind, e.path) for e in good.usage.errors] == [("vanished", str(doomed))]


def test_root_that_vanishes_entirely_does_not_crash(world_readable_root: Path) -> None:
    layout = discover_root(str(world_readable_root))
    shutil.rmtree(world_readable_root)
    snapshot = full_scan([layout], scan_options(workers=1))
    assert snapshot.errors and all(e.kind == "vanished" for e in snapshot.errors)
    assert sys.getrecursionlimit()  # and the process is still here to say so


def test_malformed_records_are_counted_and_skipped(exporter_cmd: list[str], world_readable_root: Path) -> None:
    good = world_readable_root / "envs" / "good"
    meta = good / "conda-meta"
    record = {"name": "ok", "version": "1.0", "build": "0", "files": ["lib/payload"]}
    (meta / "ok-1.0-0.json").write_text(json.dumps(record))
    (meta / "truncated-1.0-0.json").write_text('{"name": "truncated", "files": [')
    (meta / "wrong-shape-1.0-0.json").write_text(json.dumps({"name": 3, "files": "lib/payload"}))
    (meta / "latin1-1.0-0.json").write_bytes(b'{"name": "\xff"}')
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(world_readable_root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert samples(proc.stdout)["conda_exporter_scan_errors_total"][(("kind", "metadata"),)] == 3
    assert by_label(proc.stdout, "conda_env_scan_errors", "env")["good"] == 3
    assert by_label(proc.stdout, "conda_env_packages", "env")["good"] == 1
    # payload belongs to "ok"; conda-meta/ is bookkeeping, not untracked
    assert by_label(proc.stdout, "conda_env_untracked_files", "env")["good"] == 0
    assert by_label(proc.stdout, "conda_env_unique_bytes", "env")["good"] == tree_numbers(good).unique_bytes
    assert proc.stderr.count("not a conda package record") == 3
