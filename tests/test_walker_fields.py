"""The native and the Python walker agree on every field of TreeWalk, by name, with and without an Ownership.

test_walkers.py checks both against find/du, which sees only what du sees; this compares the two walkers
field by field (dataclasses.fields, so a field added to TreeWalk later is compared too), which covers the
ownership fields, the errors and the hardlink rows as well.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import exporter.scan.walk
from exporter.account.contents import ownership
from exporter.discover.roots import discover_root
from exporter.scan.records import read_env_metadata
from exporter.scan.walk import Ownership, TreeWalk, walk_tree

# Fields the hand-made tree leaves empty: it has no mount point to skip, and on a filesystem that cannot
# reflink nothing is mapped (tests/test_reflinks.py compares the walkers on XFS and btrfs, where it is).
MAY_BE_EMPTY = {"skipped_mounts", "extents"}
EXTENT_COLUMNS = ("extent_start", "extent_length", "extent_ino")
NOBODY = 65534


@pytest.fixture(autouse=True)
def _native_built() -> None:
    if exporter.scan.walk.WALKER != "native":
        pytest.skip("native walker not built")


def comparable(walk: TreeWalk) -> dict[str, Any]:
    """Every field of ``walk`` by name, in a form independent of walk order: the array columns as sorted
    multisets of rows, one of the hardlinked paths (ino, nlink, blocks, ...), one of the shared extents
    (``extents``: start, length, ino), the errors sorted."""
    arrays = [f.name for f in fields(TreeWalk) if isinstance(getattr(walk, f.name), array)]
    assert set(EXTENT_COLUMNS) <= set(arrays)
    columns = [name for name in arrays if name not in EXTENT_COLUMNS]
    assert {"ino", "nlink", "blocks"} <= set(columns)
    for table in (columns, EXTENT_COLUMNS):
        assert len({len(getattr(walk, name)) for name in table}) == 1, f"array columns {table} differ in length"
    view: dict[str, Any] = {
        f.name: getattr(walk, f.name) for f in fields(TreeWalk) if f.name not in arrays and f.name != "errors"
    }
    view["rows"] = sorted(zip(*(getattr(walk, name) for name in columns), strict=True))
    view["extents"] = sorted(zip(*(getattr(walk, name) for name in EXTENT_COLUMNS), strict=True))
    view["errors"] = sorted(walk.errors, key=lambda e: (e.path, e.kind, e.message))
    return view


def both_walks(
    monkeypatch: pytest.MonkeyPatch, top: str, exclude: frozenset[str], owned: Ownership | None
) -> tuple[TreeWalk, TreeWalk]:
    """``top`` walked by the native walker, then by the Python one."""
    native = walk_tree(top, exclude, ownership=owned)
    with monkeypatch.context() as patch:
        patch.setattr(exporter.scan.walk, "_native", None)
        python = walk_tree(top, exclude, ownership=owned)
    return native, python


def assert_same(native: TreeWalk, python: TreeWalk) -> None:
    want, got = comparable(python), comparable(native)
    assert want.keys() == got.keys()
    for name in want:
        assert got[name] == want[name], f"{native.path}: field {name} differs (native vs python)"


def _long_path_dir(parent: Path) -> None:
    """Nested directories whose absolute path passes PATH_MAX, with a file at the bottom: both walkers
    reach it from its parent's fd (test_walker_escape.py checks the numbers against du)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            deeper = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"l" * 100)
        os.close(leaf)
    finally:
        os.close(fd)


def build_tree(base: Path) -> tuple[Path, frozenset[str], Ownership]:
    """An env with every shape the ownership fields distinguish, and the Ownership its records would give."""
    cache = base / "pkgs" / "pkg-1.0-0"
    env = base / "env"
    non_ascii = os.fsdecode(b"lib/caf\xc3\xa9-\xff.bin")  # UTF-8 plus an undecodable byte (surrogateescape)
    cached_files = ["lib/linked.so", "lib/copied.txt", "share/reloc.txt", non_ascii, "lib/clash.txt"]
    for index, rel in enumerate(cached_files):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(bytes([65 + index]) * (3000 + 1000 * index))
    (cache / "lib" / "not-regular.txt").mkdir()  # a directory where the env has a file: not a copy
    os.symlink("lib", cache / "via-link")  # a symlinked dir in the entry: not followed, so not a copy
    for sub in ("conda-meta/sub", "lib", "share", "bin", "excluded", "empty", "via-link"):
        (env / sub).mkdir(parents=True)
    (env / "conda-meta" / "history").write_text("==> 2026-01-01 00:00:00 <==\n")
    (env / "conda-meta" / "pkg-1.0-0.json").write_bytes(b"{}" * 900)  # metadata: never untracked
    (env / "conda-meta" / "sub" / "nested").write_bytes(b"n" * 700)
    os.link(cache / "lib" / "linked.so", env / "lib" / "linked.so")
    for rel in ("lib/copied.txt", "share/reloc.txt", non_ascii, "lib/clash.txt"):
        shutil.copyfile(cache / rel, env / rel)
    (env / "lib" / "not-regular.txt").write_bytes(b"r" * 2500)
    (env / "lib" / "uncached.txt").write_bytes(b"u" * 6000)  # owned, absent from the cache
    shutil.copyfile(cache / "lib" / "copied.txt", env / "via-link" / "copied.txt")  # the cache has it via a symlink
    (env / "lib" / "other.so").write_bytes(b"o" * 7000)  # owned by a package whose cache entry is gone
    os.symlink("../lib/linked.so", env / "bin" / "tool")  # owned symlink
    os.symlink("python3", env / "bin" / "python")  # untracked symlink
    (env / "untracked.txt").write_bytes(b"x" * 4500)
    (env / "twice-a").write_bytes(b"t" * 9000)  # untracked inode with two names: its blocks count once
    os.link(env / "twice-a", env / "twice-b")
    (env / "excluded" / "big").write_bytes(b"e" * 50_000)
    _long_path_dir(env)
    (env / "locked" / "inside").mkdir(parents=True)  # a walk error: EACCES (see as_unprivileged)
    (env / "locked").chmod(0)
    owned = Ownership(
        files=[
            ["lib/linked.so", "lib/copied.txt", "share/reloc.txt", non_ascii, "lib/not-regular.txt",
             "lib/uncached.txt", "bin/tool", "lib/clash.txt", "lib/missing.txt", "via-link/copied.txt"],
            ["lib/other.so", "lib/clash.txt"],  # the later record owns lib/clash.txt
        ],
        # clash.txt is relocated for package 0 only, which does not own it
        relocated=[frozenset({"share/reloc.txt", "lib/clash.txt"}), frozenset()],
        cache_entries=[str(cache), None],
    )
    return env, frozenset({str(env / "excluded")}), owned


def test_walk_result_fields_are_the_stubs_and_named_as_tree_walks() -> None:
    """The C struct sequence, its .pyi stub and TreeWalk name the same things alike."""
    from exporter.scan import _walker

    runtime = getattr(_walker.WalkResult, "__match_args__")  # noqa: B009  (the stub does not declare it)
    stub = ast.parse(Path(_walker.__file__).with_name("_walker.pyi").read_text())
    (declared,) = [node for node in stub.body if isinstance(node, ast.ClassDef) and node.name == "WalkResult"]
    typed = [node.name for node in declared.body if isinstance(node, ast.FunctionDef)]
    assert list(runtime) == typed
    assert set(runtime) <= {f.name for f in fields(TreeWalk)}


@contextmanager
def as_unprivileged() -> Iterator[None]:
    """Root reads everything: to meet a real EACCES the walks run with the effective uid and gid of nobody
    (the saved uid stays 0, so root comes back after)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A fresh directory that nobody (uid 65534) may enter, unlike tmp_path (under a 0700 dir of root's)."""
    base = Path(tempfile.mkdtemp(prefix="walker-fields-"))
    base.chmod(0o755)
    yield base
    (base / "env" / "locked").chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("with_ownership", [False, True], ids=["plain", "ownership"])
def test_walkers_agree_on_hand_made_env(with_ownership: bool, open_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, exclude, owned = build_tree(open_base)
    with as_unprivileged():
        native, python = both_walks(monkeypatch, str(env), exclude, owned if with_ownership else None)
    assert_same(native, python)
    # not vacuous: every field the walk fills has something in it
    view = comparable(native)
    empty = {name for name, value in view.items() if not value}
    if not with_ownership:
        empty -= {"untracked_files", "untracked_blocks", "package_blocks", "cached_single_blocks",
                  "uncached_single_blocks"}
    assert empty <= MAY_BE_EMPTY
    assert [(e.kind, e.path) for e in native.errors] == [("permission", str(env / "locked"))]
    if with_ownership:
        assert native.untracked_files == 5  # untracked.txt, bin/python, twice-a, twice-b, the leaf past PATH_MAX
        assert all(native.package_blocks) and native.cached_single_blocks[0] and native.uncached_single_blocks[1]
        # by hand: the copies the cache holds (share/reloc.txt is relocated, lib/clash.txt package 1's), and
        # those it does not hold, via-link/copied.txt among them (the cache has it only through a symlink)
        blocks = {rel: os.lstat(env / rel).st_blocks for rel in owned.files[0] if os.path.lexists(env / rel)}
        non_ascii = os.fsdecode(b"lib/caf\xc3\xa9-\xff.bin")
        assert native.cached_single_blocks[0] == blocks["lib/copied.txt"] + blocks[non_ascii]
        assert native.uncached_single_blocks[0] == (
            blocks["lib/uncached.txt"] + blocks["lib/not-regular.txt"] + blocks["via-link/copied.txt"]
        )


def test_walkers_agree_on_the_fixture_root(fixture_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every env of the fixture root as a scan walks it (with its records' Ownership), and the caches."""
    layout = discover_root(str(fixture_root), environ={}, home=str(tmp_path))
    assert len(layout.envs) >= 4
    totals = dict.fromkeys(("hardlinked_files", "untracked_files", "cached_single_blocks", "uncached_single_blocks"), 0)
    for env in layout.envs:
        meta = read_env_metadata(env.prefix)
        for owned in (None, ownership(meta, env.pkgs_dirs)):
            native, python = both_walks(monkeypatch, env.prefix, env.exclude, owned)
            assert_same(native, python)
            assert not native.errors
            totals["hardlinked_files"] += native.hardlinked_files
            totals["untracked_files"] += native.untracked_files
            totals["cached_single_blocks"] += sum(native.cached_single_blocks)
            totals["uncached_single_blocks"] += sum(native.uncached_single_blocks)
    for pkgs in layout.pkgs_dirs:
        assert_same(*both_walks(monkeypatch, pkgs, frozenset(), None))
    # not vacuous: hardlinks, untracked files, copies the cache holds (pandas in science) and files it
    # no longer holds (pytorch in science)
    assert all(totals.values()), totals
