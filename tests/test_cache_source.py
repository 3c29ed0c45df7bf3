"""A conda-meta record's ``link.source`` cannot make the exporter look outside the known package caches
(issue 18, item 2).

The walker looks for every single-link file a package installed in the package's cache entry, and
``conda_env_copied_bytes`` counts those it finds there: were the entry whatever the record says, an env
owner could learn which files exist in directories they cannot read. Here an env's record points at a
directory outside the root holding a file of the same path; another at a symlink in the cache leading
there; a third at a package dir of the cache in which a symlink leads there (as someone who can write a
group-writable cache could plant); a fourth, honest one, at its real cache entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter.account.contents import ownership
from exporter.discover.roots import Discovery
from exporter.scan.records import read_env_metadata
from exporter.scan.walk import walk_tree
from tests.exposition import by_label, samples

SIZE = 40_000


def record(name: str, files: list[str], source: Path) -> str:
    return json.dumps({"name": name, "version": "1.0", "build": "0", "files": files,
                       "link": {"source": str(source), "type": 1}})


def make_env(root: Path, env: str, name: str, source: Path, payload: bytes) -> Path:
    prefix = root / "envs" / env
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("")
    (prefix / "conda-meta" / f"{name}-1.0-0.json").write_text(record(name, ["lib/data.bin"], source))
    (prefix / "lib").mkdir()
    (prefix / "lib" / "data.bin").write_bytes(payload)  # one link: a copy, if the cache entry holds it
    return prefix


def package_dir(path: Path, payload: bytes) -> Path:
    (path / "info").mkdir(parents=True)
    (path / "info" / "index.json").write_text("{}")
    (path / "lib").mkdir()
    (path / "lib" / "data.bin").write_bytes(payload)
    return path


def scan(exporter_cmd: list[str], root: Path) -> str:
    return subprocess.run([*exporter_cmd, "--once", "--root", str(root)], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def test_a_record_pointing_outside_the_caches_learns_nothing(exporter_cmd: list[str], tmp_path: Path) -> None:
    root = tmp_path / "conda"
    (root / "conda-meta").mkdir(parents=True)
    (root / "conda-meta" / "history").write_text("")
    payload = b"p" * SIZE
    honest_entry = package_dir(root / "pkgs" / "honest-1.0-0", payload)
    secret = package_dir(tmp_path / "outside" / "spy-1.0-0", b"s" * SIZE)  # nobody's cache: not under a root
    os.symlink(secret, root / "pkgs" / "viasymlink-1.0-0")  # a symlink planted in the cache
    planted = root / "pkgs" / "planted-1.0-0"  # a real package dir whose lib/ is a symlink leading out
    (planted / "info").mkdir(parents=True)
    os.symlink(secret / "lib", planted / "lib")
    make_env(root, "leak", "spy", secret, b"e" * SIZE)
    make_env(root, "planted", "planted", planted, b"e" * SIZE)
    make_env(root, "viasymlink", "viasymlink", root / "pkgs" / "viasymlink-1.0-0", b"e" * SIZE)
    honest = make_env(root, "honest", "honest", honest_entry, payload)

    first = scan(exporter_cmd, root)
    copied = by_label(first, "conda_env_copied_bytes", "env")
    errors = by_label(first, "conda_env_scan_errors", "env")
    # the honest copy is found in its cache entry: its allocated bytes, as du counts them
    du = int(subprocess.run(["du", "-B1", str(honest / "lib" / "data.bin")], check=True, capture_output=True,
                            text=True).stdout.split()[0])
    assert copied["honest"] == du > 0
    assert errors["honest"] == 0
    # neither hostile record makes the exporter look where it points
    assert copied["leak"] == 0
    assert copied["viasymlink"] == 0
    assert copied["planted"] == 0
    # the record naming a directory outside every cache is counted, once for the env
    assert errors["leak"] == 1
    assert errors["viasymlink"] == 0  # it names a path in the cache (which is not a package dir there)
    assert errors["planted"] == 0  # a package dir of the cache: the look-up in it follows no symlink
    assert samples(first)["conda_exporter_scan_errors_total"][(("kind", "metadata"),)] == 1

    # and nothing served depends on whether the file outside exists
    shutil.rmtree(tmp_path / "outside")
    second = scan(exporter_cmd, root)
    for name in ("conda_env_copied_bytes", "conda_env_scan_errors"):
        assert by_label(second, name, "env") == by_label(first, name, "env"), name


@pytest.mark.parametrize("walker", ["native", "python"])
def test_copies_of_many_packages_in_one_directory(
    walker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walker looks a listed directory up once per package in the cache, keeping a few of those look-ups
    open: a directory holding copies from more packages than it keeps still finds each in its own entry.
    Here 13 packages each copied one file into ``bin/``; the cache holds the file of every third package and
    a symlink (not a copy's source) for one other; the oracle is ``du`` of the files that are copies."""
    if walker == "python":
        monkeypatch.setattr(exporter.scan.walk, "_native", None)
    elif exporter.scan.walk.WALKER != "native":
        pytest.skip("native walker not built")
    root = tmp_path / "conda"
    (root / "conda-meta").mkdir(parents=True)
    (root / "conda-meta" / "history").write_text("")
    prefix = root / "envs" / "copies"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("")
    (prefix / "bin").mkdir()
    copies: list[Path] = []
    for i in range(13):
        name, payload = f"tool{i:02d}", bytes([65 + i]) * (SIZE + 4096 * i)
        entry = root / "pkgs" / f"{name}-1.0-0"
        (entry / "info").mkdir(parents=True)
        if i % 3 == 0:
            (entry / "bin").mkdir()
            (entry / "bin" / name).write_bytes(payload)
            copies.append(prefix / "bin" / name)
        elif i == 4:
            (entry / "bin").mkdir()
            os.symlink("/etc/hostname", entry / "bin" / name)  # a symlink in the cache is no copy's source
        (prefix / "conda-meta" / f"{name}-1.0-0.json").write_text(record(name, [f"bin/{name}"], entry))
        (prefix / "bin" / name).write_bytes(payload)
    layout = Discovery((str(root),), (), False).layouts()[0]
    env = next(e for e in layout.envs if e.name == "copies")
    meta = read_env_metadata(env.prefix)
    walk = walk_tree(env.prefix, env.exclude, False, ownership(meta, env.pkgs_dirs))
    du = subprocess.run(["du", "-cB1", *map(str, copies)], check=True, capture_output=True, text=True)
    expected = int(du.stdout.splitlines()[-1].split()[0])
    assert len(copies) == 5 and expected > 5 * SIZE
    assert sum(walk.cached_single_blocks) * 512 == expected
    assert walk.errors == []
