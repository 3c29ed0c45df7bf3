"""The native walker is what runs where it can be built, and both walkers meet the find oracle."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.account.links import account_tree
from exporter.scan.walk import walk_tree
from tests.oracle import tree_numbers


def test_native_walker_is_built_where_a_compiler_is() -> None:
    """The C walker is optional at install; where a compiler exists a silent fallback would only
    make scans three times slower, so the test setup (which has one) must have built it."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        pytest.skip("no C compiler: the Python walker is the expected one")
    assert exporter.scan.walk.WALKER == "native"


@pytest.mark.parametrize("walker", ["native", "python"])
def test_walk_of_each_env_matches_find(walker: str, fixture_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if walker == "python":
        monkeypatch.setattr(exporter.scan.walk, "_native", None)
    elif exporter.scan.walk.WALKER != "native":
        pytest.skip("native walker not built")
    for prefix in [p for p in (fixture_root / "envs").iterdir() if (p / "conda-meta").is_dir()]:
        walk = walk_tree(str(prefix))
        assert not walk.errors
        usage = account_tree(walk)
        expected = tree_numbers(prefix)
        got = (usage.unique_bytes, usage.shared_bytes, usage.apparent_bytes, usage.files, usage.hardlinked_files)
        assert got == (
            expected.unique_bytes,
            expected.shared_bytes,
            expected.apparent_bytes,
            expected.files,
            expected.hardlinked_files,
        ), prefix.name
