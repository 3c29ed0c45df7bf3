"""SIGTERM and SIGINT during a full scan: the exporter stops within 2 s and leaves no process behind.

Real signals to a real exporter while its startup scan runs on worker processes (forkserver, resource tracker,
workers). The exporter runs under tests/reaper.py, a child subreaper: every process it leaves behind is adopted
by the reaper, which ends only once all of them have exited, and says when.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.httpwait import free_port, poll

REAPER = str(Path(__file__).with_name("reaper.py"))
STOP_PROMISE_SECONDS = 2.0  # README, "Signals": SIGTERM and SIGINT stop within 2 s
ENVS, DIRS, FILES = 12, 40, 500  # 240k paths: a startup scan that lasts long enough to be interrupted


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root of ENVS envs of DIRS x FILES empty files: one env made file by file, the others hard-linked
    copies of it (``cp -al``, much quicker to build; the walk costs the same per path)."""
    root = tmp_path_factory.mktemp("bigroot") / "conda"
    for env in (root, root / "envs" / "e0"):
        (env / "conda-meta").mkdir(parents=True)
        (env / "conda-meta" / "history").write_text("")
    (root / "pkgs").mkdir()
    for d in range(DIRS):
        directory = root / "envs" / "e0" / "lib" / f"d{d}"
        directory.mkdir(parents=True)
        for i in range(FILES):
            os.mknod(directory / f"f{i}")
    for e in range(1, ENVS):
        subprocess.run(["cp", "-al", str(root / "envs" / "e0"), str(root / "envs" / f"e{e}")], check=True)
    return root


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except FileNotFoundError:  # exited meanwhile
        pass
    return found


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _identity(pid: int) -> tuple[str, str] | None:
    """(start time, command line) of a live process, None once it has exited (zombies count as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (fields[19], cmdline)


def _scan_workers(exporter: int) -> list[int] | None:
    """The worker processes of a scan in progress: the forkserver's children (it exists only once a pool ran)."""
    for child in _children(exporter):
        identity = _identity(child)
        if identity and "multiprocessing.forkserver" in identity[1] and len(workers := _children(child)) >= 2:
            return workers
    return None


def _forked_workers(exporter: int) -> list[int] | None:
    """The forked worker processes of a one-shot scan (both started), children of the exporter itself."""
    children = _children(exporter)
    return children if len(children) >= 2 else None


class Case(NamedTuple):
    signum: signal.Signals
    to_group: bool
    freeze: bool


@pytest.mark.parametrize(
    "case",
    [Case(signal.SIGTERM, False, True), Case(signal.SIGINT, False, True), Case(signal.SIGINT, True, False)],
    ids=["SIGTERM-scan-outlasting-the-deadline", "SIGINT-scan-outlasting-the-deadline", "SIGINT-to-the-group"],
)
def test_a_signal_during_a_full_scan_stops_every_process_in_time(
    exporter_cmd: list[str], big_root: Path, tmp_path: Path, case: Case
) -> None:
    """systemd (KillMode=mixed), docker stop and the kubelet signal the main process only; Ctrl-C in a
    terminal signals the whole foreground process group, workers included.

    ``freeze``: the workers are stopped (SIGSTOP) before the signal, which stands in for a scan that outlasts
    the stop deadline (a large tree, a slow disk): a tree whose scan takes over 2 s here costs ~10 s to build.
    A worker stopped so is also one that only SIGKILL ends, as one blocked in the kernel would be."""
    signum, to_group, freeze = case
    log = tmp_path / "exporter.log"
    port = free_port()
    command = [*exporter_cmd, "--root", str(big_root), "--web.listen-address", f"127.0.0.1:{port}",
               "--scan.workers", "2", "--scan.interval", "0"]
    with log.open("w") as err:
        reaper = subprocess.Popen([sys.executable, REAPER, *command], stdout=subprocess.PIPE, stderr=err, text=True)
    assert reaper.stdout is not None
    exporter = int(reaper.stdout.readline())
    recorded: dict[int, tuple[str, str]] = {}
    try:
        workers = poll(lambda: _scan_workers(exporter), 60, "the startup scan's worker processes", interval=0.002)
        for worker in workers if freeze else ():
            os.kill(worker, signal.SIGSTOP)
        for pid in _descendants(exporter):  # forkserver, resource tracker, workers
            if (identity := _identity(pid)) is not None:
                recorded[pid] = identity
        signalled = time.monotonic()
        (os.killpg if to_group else os.kill)(exporter, signum)  # (the reaper made the exporter a group leader)
        try:
            reaper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            session = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:20,args", "-s", str(exporter)],
                                     capture_output=True, text=True).stdout
            raise AssertionError(f"still running 30 s after {signum.name}:\n{session}") from None
        status, exited_at, all_gone_at = reaper.stdout.readline().split()
    finally:
        if reaper.poll() is None:  # failed: end what was left behind (the reaper ends with the last of them)
            for pid, identity in recorded.items():
                if _identity(pid) == identity:
                    os.kill(pid, signal.SIGKILL)
            if _identity(exporter) is not None:
                os.kill(exporter, signal.SIGKILL)
            reaper.wait(10)
        reaper.stdout.close()
    text = log.read_text()
    assert "startup scan of" not in text, "the scan ended before the signal: it no longer tests a scan in progress"
    assert f"received {signum.name}, stopping" in text
    assert "KeyboardInterrupt" not in text  # the workers leave Ctrl-C to the exporter
    # a scan cancelled because the exporter stops is no failure: no traceback, no error counted or retried
    assert "Traceback" not in text and "scan failed" not in text and "step failed" not in text, text[-2000:]
    assert int(status) == 0, text[-2000:]
    assert len(recorded) >= 4, recorded  # forkserver, resource tracker and two workers, all gone now
    assert all(_identity(pid) != identity for pid, identity in recorded.items())
    exit_seconds, all_gone_seconds = float(exited_at) - signalled, float(all_gone_at) - signalled
    print(f"{signum.name}: exporter exited after {exit_seconds:.3f} s, every process after {all_gone_seconds:.3f} s")
    assert exit_seconds <= STOP_PROMISE_SECONDS and all_gone_seconds <= STOP_PROMISE_SECONDS


def test_sigterm_during_a_one_shot_scan_leaves_no_worker_behind(
    exporter_cmd: list[str], big_root: Path, tmp_path: Path
) -> None:
    """``--once`` (and ``report``) scan on forked workers, children of the exporter: SIGTERM killed the exporter
    outright and left them blocked on their pipes for ever. Now it exits 143 after killing them. The workers are
    frozen first, as in the test above, so that the scan is surely still running."""
    command = [*exporter_cmd, "--once", "--root", str(big_root), "--scan.workers", "2"]
    with (tmp_path / "exporter.log").open("w") as err:
        reaper = subprocess.Popen([sys.executable, REAPER, *command], stdout=subprocess.PIPE, stderr=err, text=True)
    assert reaper.stdout is not None
    exporter = int(reaper.stdout.readline())
    try:
        workers = poll(lambda: _forked_workers(exporter), 60, "the scan's worker processes", interval=0.002)
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)
        signalled = time.monotonic()
        os.kill(exporter, signal.SIGTERM)
        reaper.wait(timeout=30)
        status, _exited_at, all_gone_at = reaper.stdout.readline().split()
    finally:
        if reaper.poll() is None:  # failed: end what was left behind
            for pid in _descendants(reaper.pid):
                os.kill(pid, signal.SIGKILL)
            reaper.wait(10)
        reaper.stdout.close()
    assert int(status) == 128 + signal.SIGTERM
    assert float(all_gone_at) - signalled <= STOP_PROMISE_SECONDS
