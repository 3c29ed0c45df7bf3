"""Network-filesystem errors met for real: a FUSE mount (tests/faultfs.py, fusepy over libfuse2) whose server
answers ESTALE or EIO for chosen paths, as an NFS server's failure reaches a client: through the kernel, to
the walker's own fstatat/openat. Nothing is injected into the exporter.

What must hold: such an error is counted as kind ``transient`` and never crashes a scan; an env whose walk
met one keeps its previous complete numbers (its last-scan time not advanced) and is walked again after a
back-off; on the first scan, with nothing previous, its partial numbers are published flagged by
``conda_env_scan_errors``, and the retry then brings the complete ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.discover.roots import Discovery
from exporter.model import PkgsChunk, ScanOptions, Snapshot
from exporter.scan.walk import walk_tree
from exporter.snapshot.full import full_scan
from tests.condaops import metrics_match
from tests.exposition import samples
from tests.faultfs import mounted
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch, free_port, poll, wait_ready

DEADLINE = 40.0  # the first retry comes 5 s after the failed walk; generous for a loaded machine


def _fuse_usable() -> str | None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount") is None:
        return "needs /dev/fuse and fusermount (Debian fuse3 with libfuse2)"
    try:
        import fuse  # type: ignore[import-untyped]  # noqa: F401  # fusepy
    except (ImportError, OSError):
        return "needs fusepy and libfuse2"
    return None


pytestmark = pytest.mark.skipif(_fuse_usable() is not None, reason=str(_fuse_usable()))


@pytest.fixture
def fault_root(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the fixture root served by faultfs, its control file)."""
    build_fixture_root(tmp_path / "src" / "conda")
    control = tmp_path / "control"
    control.write_text("")
    with mounted(tmp_path / "src", tmp_path / "mnt", control) as mountpoint:
        yield mountpoint / "conda", control


def _count(root: Path, *args: str) -> int:
    out = subprocess.run(["find", str(root), "-mindepth", "1", *args], check=True, capture_output=True, text=True)
    return len(out.stdout.splitlines())


@pytest.mark.parametrize("walker", ["native", "python"])
@pytest.mark.parametrize("code", ["ESTALE", "EIO"])
def test_walk_counts_a_network_error_as_transient_and_goes_on(
    fault_root: tuple[Path, Path], walker: str, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if walker == "python":
        monkeypatch.setattr(exporter.scan.walk, "_native", None)
    root, control = fault_root
    env = root / "envs" / "web"
    failing = env / "share"
    whole_files = _count(env, "-not", "-type", "d")
    lost_files = _count(failing, "-not", "-type", "d")
    assert lost_files > 0
    control.write_text(f"{code} conda/envs/web/share\n")

    walked = walk_tree(str(env))

    assert [(e.kind, e.path) for e in walked.errors] == [("transient", str(failing))]
    assert walked.files == whole_files - lost_files  # the rest of the env was walked
    control.write_text("")
    assert walk_tree(str(env)).files == whole_files


def _start(exporter_cmd: list[str], root: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_cmd, "--root", str(root), "--web.listen-address", f"127.0.0.1:{port}", "--watch.mode", "poll",
         "--watch.poll-interval", "0.3", "--watch.debounce", "0.2", "--scan.workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_ready(proc, port)
    return proc, port


def _env(text: str, name: str, env: str) -> float:
    values = [v for labels, v in samples(text).get(name, {}).items() if dict(labels).get("env") == env]
    assert len(values) == 1, (name, env, values)
    return values[0]


def _total(text: str, name: str, **labels: str) -> float:
    return sum(v for k, v in samples(text).get(name, {}).items() if labels.items() <= dict(k).items())


ENV_FIGURES = ("conda_env_unique_bytes", "conda_env_shared_bytes", "conda_env_apparent_bytes", "conda_env_files",
               "conda_env_last_scan_timestamp_seconds", "conda_env_scan_errors")


def test_env_keeps_its_previous_numbers_then_is_retried(
    fault_root: tuple[Path, Path], exporter_cmd: list[str]
) -> None:
    root, control = fault_root
    proc, port = _start(exporter_cmd, root)
    try:
        first = poll(lambda: metrics_match(port, root), DEADLINE, "the first scan equals the oracle")
        before = {name: _env(first, name, "web") for name in ENV_FIGURES}
        scans_before = _total(first, "conda_exporter_scans_total", trigger="poll")

        # The filer stops answering for share/a/ while the env changes: a new top-level file makes the poll
        # rescan the env, and its walk meets ESTALE. (Deeper than the poll's fingerprints reach, so only the
        # retry walks it again once the filer answers.)
        control.write_text("ESTALE conda/envs/web/share/a\n")
        (root.parent.parent / "src" / "conda" / "envs" / "web" / "added.txt").write_bytes(b"a" * 7000)

        def rescanned() -> str | None:
            text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
            return text if _total(text, "conda_exporter_scans_total", trigger="poll") > scans_before else None

        during = poll(rescanned, DEADLINE, "the env rescanned after the change")
        # The previous complete numbers, not numbers short of share/a/ (which holds 12,345 bytes).
        assert {name: _env(during, name, "web") for name in ENV_FIGURES} == before
        assert _total(during, "conda_exporter_scan_errors_total", kind="transient") >= 1

        # The filer answers again: the retry (5 s back-off) walks the env, with added.txt, as the oracle says.
        control.write_text("")
        after = poll(lambda: metrics_match(port, root), DEADLINE, "the retry equals the oracle")
        assert _env(after, "conda_env_last_scan_timestamp_seconds", "web") > before[
            "conda_env_last_scan_timestamp_seconds"]
        assert _env(after, "conda_env_apparent_bytes", "web") == before["conda_env_apparent_bytes"] + 7000
        assert _total(after, "conda_exporter_scans_total", trigger="retry", result="success") >= 1
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_first_scan_publishes_partial_numbers_flagged_then_retries(
    fault_root: tuple[Path, Path], exporter_cmd: list[str]
) -> None:
    root, control = fault_root
    control.write_text("EIO conda/envs/web/share/a\n")
    proc, port = _start(exporter_cmd, root)
    try:
        text = fetch(f"http://127.0.0.1:{port}/metrics")[1]
        assert _env(text, "conda_env_scan_errors", "web") == 1  # shown, and flagged partial
        assert _total(text, "conda_exporter_scan_errors_total", kind="transient") == 1
        partial_files = _env(text, "conda_env_files", "web")
        control.write_text("")
        after = poll(lambda: metrics_match(port, root), DEADLINE, "the retry equals the oracle")
        assert _env(after, "conda_env_scan_errors", "web") == 0
        assert _env(after, "conda_env_files", "web") == partial_files + _count(root / "envs" / "web" / "share" / "a",
                                                                                "-not", "-type", "d")
    finally:
        proc.terminate()
        proc.wait(10)


def test_full_scan_keeps_the_previous_result_of_each_tree_that_met_one(fault_root: tuple[Path, Path]) -> None:
    """A reconcile-style full scan given the previous snapshot: the env and the cache chunk whose walks met
    a transient error are the previous results, everything else is walked anew; the errors are counted."""
    root, control = fault_root
    layouts = Discovery((str(root),), (), False).layouts()
    options = ScanOptions(workers=1, cross_filesystems=False, top_packages=0, stale_after=1e9)
    first = full_scan(layouts, options)
    assert not [e for e in first.errors if e.kind != "metadata"]  # (records name the source dir's cache: metadata)
    source = root.parent.parent / "src" / "conda"
    for env in ("web", "analysis"):
        (source / "envs" / env / "added.txt").write_bytes(b"a" * 7000)
    (source / "pkgs" / "numpy-1.26.4-py311h64a7726_0" / "added.txt").write_bytes(b"a" * 7000)
    control.write_text("ESTALE conda/envs/web/share/a\nETIMEDOUT conda/pkgs/numpy-1.26.4-py311h64a7726_0/info\n")

    second = full_scan(layouts, options, previous=first)

    assert sorted((e.kind, e.path) for e in second.errors if e.kind != "metadata") == [
        ("transient", str(root / "envs" / "web" / "share" / "a")),
        ("transient", str(root / "pkgs" / "numpy-1.26.4-py311h64a7726_0" / "info")),
    ]
    before = {e.name: e for e in first.envs}
    after = {e.name: e for e in second.envs}
    assert after["web"] == before["web"]  # kept whole: numbers and scan time
    assert after["analysis"].usage.apparent_bytes == before["analysis"].usage.apparent_bytes + 7000  # walked anew

    def numpy_chunk(snapshot: Snapshot) -> PkgsChunk:
        return next(c for p in snapshot.pkgs for c in p.chunks if any("numpy" in d for d in c.package_dirs))

    assert numpy_chunk(second) is numpy_chunk(first)  # the previous walk, without added.txt
