"""The scan budget (``--scan.max-rate N``): a full scan reads at most N paths per second over all its workers,
in every 1 s window, and so takes P/N seconds for P paths.

The oracles are independent of the exporter: ``find`` counts the paths; ``strace -f -ttt`` records the time of
every per-path ``fstatat`` of the real ``--once`` process and its workers, bucketed here into sliding 1 s
windows. (strace slows the process a lot: the window check uses it with a small N, the P/N timing does not.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.config import NETWORK_MAX_RATE
from exporter.discover.roots import Discovery
from exporter.model import ScanOptions
from exporter.scan.budget import batch_size, budget_totals, mount_type
from exporter.snapshot.full import full_scan
from tests.exposition import samples
from tests.faultfs import mounted
from tests.fixture_tree import build_fixture_root

GENERATE = Path(__file__).resolve().parent.parent / "benchmarks" / "generate.py"
# A per-path stat of the walk: fstatat of a name relative to a directory fd, not following symlinks
# (glibc's fstat of an open fd is newfstatat(fd, "", ..., AT_EMPTY_PATH), left out: not a path of the tree;
# with -f, a call another process interrupted is cut at "<unfinished ...>", before its flags).
PATH_STAT = re.compile(
    r'^\d+\s+(\d+\.\d+) (?:newfstatat|fstatat64)\(\d+, "[^"]+", (?:.*AT_SYMLINK_NOFOLLOW|\s*<unfinished \.\.\.>)'
)


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benchmarks/generate.py's small tree: ~10k paths, 5 envs, 50 packages."""
    out = tmp_path_factory.mktemp("budget") / "small"
    subprocess.run([sys.executable, str(GENERATE), "--size", "small", "--out", str(out)], check=True,
                   capture_output=True)
    return out


def _paths(root: Path, *expression: str) -> int:
    """How many paths below ``root`` ``find`` prints (all of them without an ``expression``)."""
    found = subprocess.run(["find", str(root), "-mindepth", "1", *expression], check=True, capture_output=True,
                           text=True)
    return len(found.stdout.splitlines())


def _scan(root: Path, options: ScanOptions) -> tuple[float, list[tuple[str, int, int, int, int]]]:
    """Seconds a full scan took, and each env's (prefix, unique, shared, apparent bytes, files)."""
    layouts = Discovery((str(root),), (), False).layouts()
    started = time.monotonic()
    snapshot = full_scan(layouts, options)
    seconds = time.monotonic() - started
    assert not snapshot.errors
    envs = sorted((e.prefix, e.usage.unique_bytes, e.usage.shared_bytes, e.usage.apparent_bytes, e.usage.files)
                  for e in snapshot.envs)
    return seconds, envs


@pytest.mark.parametrize("walker", ["native", "python"])
def test_budgeted_full_scan_takes_paths_over_rate(
    small_tree: Path, walker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if walker == "python":  # in this process (one worker): the monkeypatch does not reach worker processes
        monkeypatch.setattr(exporter.scan.walk, "_native", None)
    workers = 2 if walker == "native" else 1
    rate = 5000
    paths = _paths(small_tree)
    assert paths > 9000
    plain = ScanOptions(workers=workers, cross_filesystems=False, top_packages=0, stale_after=1e9)
    unbudgeted, numbers = _scan(small_tree, plain)
    waited_before = budget_totals()[1]

    budgeted, budgeted_numbers = _scan(small_tree, ScanOptions(workers=workers, cross_filesystems=False,
                                                               top_packages=0, stale_after=1e9, max_rate=rate))

    expected = paths / rate  # ~2 s
    # A copied file's look-up in its package cache is a request to the filesystem too, and pays like a path:
    # at most one per single-link file outside the cache, and one per directory there (the C walker opens
    # a listed directory in a package's cache entry once).
    lookups = _paths(small_tree, "-path", str(small_tree / "pkgs"), "-prune", "-o", "(", "-type", "f", "-links",
                     "1", "-o", "-type", "d", ")", "-print")
    # Never faster than the budget allows; slower only by those look-ups and by what the same scan costs
    # without it (this run).
    most = (paths + lookups) / rate
    assert 0.9 * expected <= budgeted <= 1.1 * most + unbudgeted, (budgeted, expected, most, unbudgeted)
    assert budgeted_numbers == numbers  # the budget changes when paths are read, never what is found
    assert budget_totals()[0] == rate
    assert budget_totals()[1] - waited_before > 0.5 * expected  # the walks slept for it, and said so


def test_no_one_second_window_exceeds_the_rate(small_tree: Path, exporter_cmd: list[str], tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("needs strace (Debian package strace)")
    rate, workers = 2000, 2
    trace = tmp_path / "trace"
    done = subprocess.run(
        ["strace", "-f", "-ttt", "-e", "trace=newfstatat,fstatat64", "-o", str(trace), *exporter_cmd, "--once",
         "--root", str(small_tree), "--scan.max-rate", str(rate), "--scan.workers", str(workers)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    times = sorted(float(m.group(1)) for line in trace.read_text().splitlines() if (m := PATH_STAT.match(line)))
    assert len(times) >= 0.98 * _paths(small_tree)  # every path of the tree was stat()ed, and counted here
    # The most stats in any window [t, t + 1 s) starting at a stat.
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        most = max(most, j - i)
    assert most <= rate * 1.1, (most, rate)
    assert batch_size(rate, workers) * (workers + 1) <= rate * 0.05  # the design's own margin, within the 10%

    metrics = samples(done.stdout)
    assert metrics["conda_exporter_scan_budget_paths_per_second"][()] == rate
    assert metrics["conda_exporter_scan_budget_wait_seconds_total"][()] > 0


def test_auto_budget_leaves_local_filesystems_alone(small_tree: Path, exporter_cmd: list[str]) -> None:
    """Auto (the default): no budget on a local filesystem, so the scan is as fast as without one."""
    done = subprocess.run([*exporter_cmd, "--once", "--root", str(small_tree)], capture_output=True, text=True,
                          timeout=120, check=True)
    metrics = samples(done.stdout)
    assert metrics["conda_exporter_scan_budget_paths_per_second"][()] == 0
    assert metrics["conda_exporter_scan_budget_wait_seconds_total"][()] == 0


def test_auto_budget_applies_on_a_network_filesystem(exporter_cmd: list[str], tmp_path: Path) -> None:
    """Auto on a root the kernel lists as ``fuse.sshfs`` (tests/faultfs.py mounted with that subtype: what
    /proc/self/mountinfo says is all the exporter asks): the network default applies; 0 turns it off."""
    try:
        import fuse  # type: ignore[import-untyped]  # noqa: F401  # fusepy
    except (ImportError, OSError):
        pytest.skip("needs fusepy and libfuse2 (Debian libfuse2, fuse3)")
    build_fixture_root(tmp_path / "src" / "conda")
    (tmp_path / "control").write_text("")
    with mounted(tmp_path / "src", tmp_path / "mnt", tmp_path / "control", subtype="sshfs") as mountpoint:
        assert " - fuse.sshfs " in next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                                         if f" {mountpoint} " in line)
        runs = {}
        for given in ([], ["--scan.max-rate", "0"]):
            done = subprocess.run([*exporter_cmd, "--once", "--root", str(mountpoint / "conda"), *given],
                                  capture_output=True, text=True, timeout=120, check=True)
            runs[bool(given)] = samples(done.stdout)["conda_exporter_scan_budget_paths_per_second"][()]
    assert runs == {False: NETWORK_MAX_RATE, True: 0}


def test_mount_points_of_any_bytes_are_read(tmp_path: Path) -> None:
    """Anyone can mount a FUSE filesystem at a path of any bytes: /proc/self/mountinfo then holds a mount
    point that is not UTF-8 (and one with a space, which the kernel writes as \\040). Reading it must
    neither fail for every other path nor miss that mount. Real tmpfs mounts (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    odd = os.fsencode(tmp_path) + b"/\xff odd\xe2\x80\xa8name"  # not UTF-8, a space, U+2028 (a line separator)
    os.mkdir(odd)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", odd], capture_output=True).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        assert mount_type(os.fsdecode(odd + b"/inside")) == "tmpfs"
        assert mount_type(os.fsdecode(odd)) == "tmpfs"
        found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)], capture_output=True,
                               text=True, check=True).stdout.strip()
        assert mount_type(str(tmp_path)) == found  # every other path still resolves, as findmnt says
    finally:
        subprocess.run(["umount", odd], check=True)
