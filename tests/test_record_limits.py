"""What an env's conda-meta records may cost is bounded (issue 18, item 11).

An env owner writes their env's records. One listing millions of files made a rescan peak at 643 MB, past
the 512 MiB the shipped systemd unit and Kubernetes manifests allow, so the exporter was OOM-killed at
every rescan. Here such an env is scanned under a real 512 MiB memory limit (a cgroup), and each limit of
exporter.scan.records is met by a record just past it: the record is skipped with a ``metadata`` error
and everything else in the env is still counted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.scan.records import MAX_ENV_FILES, MAX_RECORD_BYTES, MAX_RECORD_FILES, read_env_metadata
from tests.exposition import by_label, samples

MEMORY_LIMIT = 512 * 1024 * 1024  # MemoryMax=512M of deploy/systemd/conda-env-exporter.service
HOSTILE_FILES = 3_000_000


def write_record(meta: Path, name: str, files: int, prefix: str = "lib/f") -> Path:
    """A record of package ``name`` listing ``files`` paths (written as JSON text, quickly)."""
    path = meta / f"{name}-1.0-0.json"
    with open(path, "wb") as out:
        out.write(b'{"name": "%s", "version": "1.0", "build": "0", "files": [' % name.encode())
        step = 100_000
        for start in range(0, files, step):
            chunk = ",".join(f'"{prefix}{i}"' for i in range(start, min(files, start + step)))
            out.write((b"," if start else b"") + chunk.encode())
        out.write(b'], "link": {"type": 1}}')
    return path


def make_env(prefix: Path) -> Path:
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True)
    (meta / "history").write_text("")
    (meta / "small-1.0-0.json").write_text(json.dumps(
        {"name": "small", "version": "1.0", "build": "0", "files": ["lib/small.txt"], "link": {"type": 1}}
    ))
    (prefix / "lib").mkdir()
    (prefix / "lib" / "small.txt").write_bytes(b"s" * 5000)
    return meta


def kinds(prefix: Path) -> list[tuple[str, str]]:
    meta = read_env_metadata(str(prefix))
    return [(e.kind, Path(e.path).name) for e in meta.errors]


def test_a_record_over_the_byte_limit_is_not_read(tmp_path: Path) -> None:
    meta = make_env(tmp_path / "env")
    with open(meta / "huge-1.0-0.json", "wb") as out:
        out.truncate(MAX_RECORD_BYTES + 1)  # sparse: its size is what counts, it is never read
    read = read_env_metadata(str(tmp_path / "env"))
    assert [p.name for p in read.packages] == ["small"]
    assert [(e.kind, Path(e.path).name) for e in read.errors] == [("metadata", "huge-1.0-0.json")]
    assert "byte limit" in read.errors[0].message


def test_a_record_listing_too_many_files_is_skipped(tmp_path: Path) -> None:
    meta = make_env(tmp_path / "env")
    write_record(meta, "many", MAX_RECORD_FILES + 1)
    write_record(meta, "enough", MAX_RECORD_FILES)  # exactly at the limit: read
    read = read_env_metadata(str(tmp_path / "env"))
    assert sorted(p.name for p in read.packages) == ["enough", "small"]
    assert [(e.kind, Path(e.path).name) for e in read.errors] == [("metadata", "many-1.0-0.json")]


def test_records_past_the_env_total_are_skipped(tmp_path: Path) -> None:
    meta = make_env(tmp_path / "env")
    per_record = MAX_RECORD_FILES
    for index in range(MAX_ENV_FILES // per_record):
        write_record(meta, f"part{index}", per_record, prefix=f"p{index}/")
    read = read_env_metadata(str(tmp_path / "env"))
    # sorted by file name: part0..part3 come first and take MAX_ENV_FILES; small's one file is one too many
    assert sum(len(p.files) for p in read.packages) == MAX_ENV_FILES
    assert [(e.kind, Path(e.path).name) for e in read.errors] == [("metadata", "small-1.0-0.json")]


def test_a_fifo_or_a_symlink_is_not_read_as_a_record(tmp_path: Path) -> None:
    """A FIFO would block a plain open() for ever; a symlink would read a file the env owner chose."""
    meta = make_env(tmp_path / "env")
    os.mkfifo(meta / "fifo-1.0-0.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"name": "elsewhere", "version": "1", "files": []}))
    os.symlink(tmp_path / "elsewhere.json", meta / "link-1.0-0.json")
    out = subprocess.run(  # in a child process, so that a blocked open() fails the test, not hangs it
        [sys.executable, "-c", "import sys; from exporter.scan.records import read_env_metadata as r; "
         "m = r(sys.argv[1]); print([p.name for p in m.packages], [e.message for e in m.errors])",
         str(tmp_path / "env")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert out.startswith("['small'] ")
    assert "not a regular file" in out and "a symlink" in out


class MemoryCgroup:
    """A memory-limited cgroup to run a command in: cgroup v2 (memory.max) or v1 (memory.limit_in_bytes),
    made below the one this process is in."""

    def __init__(self, limit: int) -> None:
        self.dir, self.v2 = self._make(limit)

    @staticmethod
    def _make(limit: int) -> tuple[Path, bool]:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
                base, v2, knob = Path("/sys/fs/cgroup") / path.lstrip("/"), True, "memory.max"
            elif "memory" in controllers.split(","):
                base, v2, knob = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), False, "memory.limit_in_bytes"
            else:
                continue
            group = base / f"cee-test-{os.getpid()}"
            try:
                group.mkdir()
                (group / knob).write_text(str(limit))
            except OSError as exc:
                shutil.rmtree(group, ignore_errors=True)
                pytest.skip(f"cannot make a memory-limited cgroup under {base}: {exc}")
            return group, v2
        pytest.skip("no memory cgroup controller here")

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the cgroup (it moves itself in before exec)."""
        procs = self.dir / "cgroup.procs"
        script = f'echo $$ > "{procs}" && exec "$@"'
        return subprocess.run(["sh", "-c", script, "sh", *argv], capture_output=True, text=True, timeout=timeout)

    def peak(self) -> int | None:
        knob = self.dir / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(knob.read_text()) if knob.exists() else None

    def oom_kills(self) -> int:
        events = self.dir / ("memory.events" if self.v2 else "memory.oom_control")
        for line in events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        self.dir.rmdir()


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    group = MemoryCgroup(MEMORY_LIMIT)
    yield group
    group.remove()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_env_listing_millions_of_files_is_scanned_under_512_mib(
    workers: int, exporter_cmd: list[str], memory_cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    root = tmp_path / "conda"
    make_env(root)
    hostile = make_env(root / "envs" / "hostile")
    write_record(hostile, "millions", HOSTILE_FILES)
    make_env(root / "envs" / "fine")
    assert (hostile / "millions-1.0-0.json").stat().st_size < MAX_RECORD_BYTES  # the file-count limit acts

    proc = memory_cgroup.run(
        [*exporter_cmd, "--once", "--root", str(root), "--scan.workers", str(workers)], timeout=300
    )
    print(f"cgroup peak: {memory_cgroup.peak()} bytes, OOM kills: {memory_cgroup.oom_kills()}")
    assert memory_cgroup.oom_kills() == 0
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = by_label(proc.stdout, "conda_env_scan_errors", "env")
    packages = by_label(proc.stdout, "conda_env_packages", "env")
    assert errors == {"base": 0, "hostile": 1, "fine": 0}
    assert packages == {"base": 1, "hostile": 1, "fine": 1}  # small's record still counts
    assert samples(proc.stdout)["conda_exporter_scan_errors_total"][(("kind", "metadata"),)] == 1
    assert "millions-1.0-0.json" in proc.stderr  # the log line names the record


def test_a_symlinked_history_does_not_tell_another_file_s_time(tmp_path: Path) -> None:
    """conda-meta/history's mtime is the env's last transaction; a symlink there must not report the
    mtime of a file the env owner points it at (one they may not be able to stat themselves)."""
    meta = make_env(tmp_path / "env")
    (meta / "history").unlink()
    target = tmp_path / "private"
    target.write_text("")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    os.symlink(target, meta / "history")
    os.utime(meta / "history", (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    assert read_env_metadata(str(tmp_path / "env")).last_transaction == 1_500_000_000
