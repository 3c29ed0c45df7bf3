"""The walk stays inside its tree while an env owner swaps a directory for a symlink (issue 18, item 1),
and walks trees deeper than PATH_MAX, or than the fds a walk may hold, completely, as du does.

The swap is real: a child process exchanges a directory of the env with a symlink to a directory outside
it, with renameat2(RENAME_EXCHANGE) in a loop, while the walker scans the env again and again. A walker
that opens directories by absolute path (O_NOFOLLOW guards only the last component) follows the symlink
whenever the swap lands between listing a directory and opening one below it; one that opens each
directory from its parent's fd by name cannot.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.account.links import account_tree
from exporter.scan.walk import MAX_OPEN_DIRS, REPLACED_MESSAGE, walk_tree
from tests.oracle import du_bytes, tree_numbers

SCANS = 30
SUBDIRS = 200
LIB_FILES = 3000
BIG = 4 * 1024 * 1024

SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    a, b, ready = (os.fsencode(p) for p in sys.argv[1:4])
    swaps = 0
    while True:
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        swaps += 1
        if swaps == 1000:
            open(ready, "w").close()
    """
)


@pytest.fixture(params=["native", "python"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(exporter.scan.walk, "_native", None)
    elif exporter.scan.walk.WALKER != "native":
        pytest.skip("native walker not built")
    return str(request.param)


def build_swap_tree(base: Path) -> tuple[Path, Path, int]:
    """An env whose ``lib/sub`` holds SUBDIRS small dirs and whose ``lib/link`` is a symlink to ``outside``,
    a directory with the same names, each holding a link to one BIG-byte file; returns (env, outside, the
    big file's inode)."""
    outside = base / "outside"
    outside.mkdir()
    big = outside / "big"
    big.write_bytes(b"s" * BIG)  # real data: allocated blocks, not a hole
    env = base / "env"
    (env / "conda-meta").mkdir(parents=True)
    (env / "conda-meta" / "history").write_text("")
    for index in range(SUBDIRS):
        name = f"d{index:03d}"
        (env / "lib" / "sub" / name).mkdir(parents=True)
        (env / "lib" / "sub" / name / "small").write_bytes(b"e" * 100)
        (outside / name).mkdir()
        os.link(big, outside / name / "big")
    os.symlink(outside, env / "lib" / "link")
    # Files beside them make listing lib/ take long enough for swaps to land between seeing a name and
    # opening it, so that the walk meets them.
    for index in range(LIB_FILES):
        (env / "lib" / f"f{index:04d}").write_bytes(b"")
    return env, outside, big.stat().st_ino


def run_swapper(a: Path, b: Path, ready: Path) -> subprocess.Popen[bytes]:
    """Start exchanging ``a`` and ``b`` in a loop; return once it has done so a thousand times."""
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(a), str(b), str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert swapper.poll() is None, "the swapper died"
        assert time.monotonic() < deadline, "the swapper never got going"
        time.sleep(0.01)
    return swapper


def test_a_directory_swapped_for_a_symlink_never_leads_the_walk_out(walker: str, tmp_path: Path) -> None:
    env, outside, big_ino = build_swap_tree(tmp_path)
    own = tree_numbers(env)  # the env's own content, before any swap
    own_allocated = du_bytes(env)
    escaped: list[tuple[int, bool, int, int]] = []
    swaps_seen = 0
    swapper = run_swapper(env / "lib" / "sub", env / "lib" / "link", tmp_path / "swapping")
    scans = 0
    deadline = time.monotonic() + 120
    try:
        # SCANS scans, and more until one has met a swap (on a busy machine the swapper may get no CPU
        # during a few of them)
        while scans < SCANS or (not swaps_seen and time.monotonic() < deadline):
            walk = walk_tree(str(env))
            usage = account_tree(walk)
            swaps_seen += sum(1 for e in walk.errors if e.kind == "vanished")
            # In a race one subtree can be met under both names (as du would meet it): at most twice the
            # env's own content. One BIG file from outside is more than that.
            allocated = usage.unique_bytes + usage.shared_bytes
            if big_ino in walk.ino or usage.apparent_bytes > 2 * own.apparent_bytes or allocated > 2 * own_allocated:
                escaped.append((scans, big_ino in walk.ino, usage.apparent_bytes, allocated))
            scans += 1
        assert swapper.poll() is None, "the swapper died during the scans"
    finally:
        swapper.kill()
        swapper.wait()
    assert 2 * own.apparent_bytes < BIG and 2 * own_allocated < BIG  # the bounds above can tell
    assert not escaped, (
        f"{walker}: {len(escaped)} of {scans} scans counted files from {outside} (scan, big file seen, apparent, "
        f"allocated; own: {own.apparent_bytes}, {own_allocated}): {escaped[:5]}"
    )
    assert swaps_seen, "no scan met a swap: the race did not happen"


def test_a_directory_swapped_for_another_is_not_entered(walker: str, tmp_path: Path) -> None:
    """Two directories of the env exchanged: the one opened by a name is checked against the (dev, ino)
    the listing showed for that name, and not entered when it differs."""
    env, _, _ = build_swap_tree(tmp_path)
    (env / "lib" / "alt").mkdir()
    (env / "lib" / "alt" / "only-in-alt").write_bytes(b"a" * 100)
    replaced = scans = 0
    deadline = time.monotonic() + 120
    swapper = run_swapper(env / "lib" / "sub", env / "lib" / "alt", tmp_path / "swapping")
    try:
        while scans < SCANS or (not replaced and time.monotonic() < deadline):
            errors = walk_tree(str(env)).errors
            assert {e.kind for e in errors} <= {"vanished"}, errors
            replaced += sum(1 for e in errors if e.message == REPLACED_MESSAGE)
            scans += 1
    finally:
        swapper.kill()
        swapper.wait()
    assert replaced, "no scan met a swapped directory"


def build_deep_tree(top: Path, depth: int, name_len: int) -> None:
    """A chain of ``depth`` directories, each also holding two side dirs with a file, and a file at the
    bottom; made from dir fds, since its paths pass PATH_MAX."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            for side in ("side1", "side2"):
                os.mkdir(side, dir_fd=fd)
                leaf = os.open(f"{side}/f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(leaf, b"f" * (10 + level))
                os.close(leaf)
            name = f"{level:0{name_len}d}"
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        bottom = os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(bottom, b"b" * 70_000)
        os.close(bottom)
    finally:
        os.close(fd)


# Walks a tree with RLIMIT_NOFILE lowered and prints its numbers as JSON: argv = walker, top, fd limit.
WALK_LIMITED = textwrap.dedent(
    """
    import json, resource, sys
    import exporter.scan.walk
    from exporter.account.links import account_tree
    walker, top, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if walker == "python":
        exporter.scan.walk._native = None
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    walk = exporter.scan.walk.walk_tree(top)
    usage = account_tree(walk)
    print(json.dumps({"errors": [e.message for e in walk.errors], "files": usage.files,
                      "apparent": usage.apparent_bytes, "allocated": usage.unique_bytes + usage.shared_bytes}))
    """
)


def test_a_tree_past_path_max_and_deeper_than_the_fd_bound_is_counted_like_du(walker: str, tmp_path: Path) -> None:
    depth = MAX_OPEN_DIRS + 344  # 600 levels of 11 bytes: paths of 6.6 kB, past PATH_MAX (4096)
    top = tmp_path / "deep"
    build_deep_tree(top, depth, 10)
    expected = tree_numbers(top)
    assert expected.files == 2 * depth + 1  # find saw all of it, the bottom file included
    # Without the fd bound a walk would hold one fd per level with a side dir still to walk: about 400
    # here; the limit leaves room for the interpreter's own fds and the bound, not for that.
    limit = MAX_OPEN_DIRS + 40
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= limit
    out = subprocess.run(
        [sys.executable, "-c", WALK_LIMITED, walker, str(top), str(limit)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout
    got = json.loads(out)
    assert got == {
        "errors": [],
        "files": expected.files,
        "apparent": expected.apparent_bytes,
        "allocated": du_bytes(top),
    }


def test_both_walkers_hold_the_same_fd_bound() -> None:
    if exporter.scan.walk.WALKER != "native":
        pytest.skip("native walker not built")
    from exporter.scan import _walker

    assert _walker.MAX_OPEN_DIRS == MAX_OPEN_DIRS
