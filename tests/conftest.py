"""Shared fixtures: the exporter command and fixture roots built on the real filesystem."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixture_tree import build_fixture_root
from tests.realconda import RealRoot, build_real_conda_root, unmount

EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))


@pytest.fixture(scope="session")
def exporter_cmd() -> list[str]:
    """The installed console script, from the interpreter running the tests."""
    assert Path(EXPORTER).exists(), f"{EXPORTER} missing: install the package first"
    return [EXPORTER]


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A read-only-by-convention fixture root shared by tests that do not change it."""
    base = tmp_path_factory.mktemp("fixture")
    root = build_fixture_root(base / "conda")
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def real_conda_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRoot]:
    """Envs written by py-rattler from packages built offline (tests/realconda.py), built once."""
    base = tmp_path_factory.mktemp("realconda")
    built = build_real_conda_root(base)
    yield built
    if built.copied_cache is not None:
        unmount(built.copied_cache.parent)
    shutil.rmtree(base, ignore_errors=True)
