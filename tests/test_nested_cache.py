"""mamba >= 2.6's hierarchical package cache (``pkgs/<channel...>/<platform>/<dist>/``, mamba-org/mamba#4163),
mixed with a flat package: every cache and env number equals the find/du oracle, in ``--once`` and
through incremental rescans, and the cache is no longer reported as one big leftover."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import exporter.account.links
import exporter.daemon.incremental
import exporter.scan.walk
from exporter import cli
from exporter.account.trees import measure_cache, remeasure_chunk
from exporter.daemon.incremental import rediscover, rescan
from exporter.daemon.targets import Target, WatchSpec, fingerprints, watch_specs
from exporter.discover.roots import RootLayout, discover_root
from exporter.expose.exposition import ExpositionCache
from exporter.model import Snapshot
from exporter.scan.cachelayout import MAX_LEVEL_DEPTH, list_cache
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.condaops import ENV_METRICS, mismatches
from tests.deletion import delete_and_clean
from tests.exposition import by_label, samples
from tests.nested_tree import (
    DISTS,
    ENVS,
    HALF,
    build_nested_root,
    content,
    extract,
    link,
    package_dir,
    prefix_of,
    unlink,
)
from tests.options import scan_options
from tests.oracle import contents_numbers, du_bytes, pkgs_oracle, tree_numbers

OPTIONS = scan_options(workers=1)
CONTENTS = {"conda_env_packages": "packages", "conda_env_untracked_bytes": "untracked_bytes",
            "conda_env_untracked_files": "untracked_files", "conda_env_copied_bytes": "copied_bytes"}
# what may differ between two scans of an unchanged tree
MOVING = ("conda_env_last_scan_timestamp_seconds", "conda_root_filesystem_avail_bytes", "conda_exporter_")


def exposition(snapshot: Snapshot) -> str:
    store = SnapshotStore()
    store.publish(snapshot, "event")
    return ExpositionCache(store).render().decode()


def blocks_of(path: Path) -> int:
    out = subprocess.run(["find", str(path), "-printf", "%b\\n"], check=True, capture_output=True, text=True).stdout
    return sum(int(b) for b in out.split()) * 512


def every_mismatch(text: str, root: Path) -> list[str]:
    """Env numbers, contents (copied, dedupable) and cache numbers against the oracles."""
    problems = mismatches(text, root)
    dedupable = by_label(text, "conda_pkgs_dedupable_bytes", "pkgs_dir")
    expected_dedupable: dict[str, int] = {}
    for env in by_label(text, "conda_env_unique_bytes", "env"):
        prune = [root / "envs", root / "pkgs"] if env == "base" else []
        expected = contents_numbers(prefix_of(root, env), [root / "pkgs"], prune)
        for metric, attr in CONTENTS.items():
            if by_label(text, metric, "env")[env] != getattr(expected, attr):
                problems.append(f"{metric}{{env={env}}} {by_label(text, metric, 'env')[env]} != "
                                f"{getattr(expected, attr)}")
        for cache, size in expected.dedupable_bytes.items():
            expected_dedupable[cache] = expected_dedupable.get(cache, 0) + size
    if dedupable != {str(root / "pkgs"): expected_dedupable.get(str(root / "pkgs"), 0)}:
        problems.append(f"dedupable {dedupable} != {expected_dedupable}")
    return problems


@pytest.fixture(scope="module")
def nested_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nested_root(tmp_path_factory.mktemp("nested") / "conda")


@pytest.fixture(scope="module", params=["1", "2", "python"], ids=["inline", "two-workers", "python-walker"])
def once(request: pytest.FixtureRequest, exporter_cmd: list[str], nested_root: Path) -> str:
    if request.param == "python":  # the walker's Python loop, in this process
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
            patch.setattr(exporter.scan.walk, "_native", None)
            assert cli.main(["--once", "--root", str(nested_root), "--scan.workers", "1"]) == 0
        return out.getvalue()
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(nested_root), "--scan.workers", request.param],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_once_matches_the_oracle(once: str, nested_root: Path) -> None:
    assert every_mismatch(once, nested_root) == []
    got = samples(once)
    assert list(got["conda_root_bytes"].values()) == [du_bytes(nested_root)]
    for env in ENVS:
        prune = [nested_root / "envs", nested_root / "pkgs"] if env == "base" else []
        expected = tree_numbers(prefix_of(nested_root, env), prune)
        for metric, attr in ENV_METRICS.items():
            assert by_label(once, metric, "env")[env] == getattr(expected, attr), (metric, env)


def test_the_cache_is_counted_as_packages_not_as_leftover(once: str, nested_root: Path) -> None:
    """The bug: 0 packages, 0 tarballs and the whole cache as leftover. Facts by construction."""
    got = {name: list(values.values()) for name, values in samples(once).items() if name.startswith("conda_pkgs_")}
    assert got["conda_pkgs_packages"] == [len(DISTS)]
    assert got["conda_pkgs_tarballs"] == [len(DISTS) + 1]  # and the half-extracted one's archive
    assert got["conda_pkgs_leftover_bytes"] == [blocks_of(nested_root / "pkgs" / HALF)]
    assert got["conda_pkgs_unreferenced_packages"] == [2]  # labdata, linked nowhere; orgpkg, copied
    unreferenced = du_bytes(package_dir(nested_root, "labdata")) + du_bytes(package_dir(nested_root, "orgpkg"))
    assert got["conda_pkgs_unreferenced_bytes"] == [unreferenced]
    assert got["conda_pkgs_index_cache_bytes"] == [du_bytes(nested_root / "pkgs" / "cache")]
    copied = by_label(once, "conda_env_copied_bytes", "env")
    assert copied["beta"] > 0 and got["conda_pkgs_dedupable_bytes"] == [copied["beta"]]
    assert pkgs_oracle(nested_root / "pkgs")["conda_pkgs_packages"] == len(DISTS)  # the oracle sees them too


def test_what_deleting_an_env_frees_includes_its_nested_packages(
    exporter_cmd: list[str], once: str, nested_root: Path, tmp_path: Path
) -> None:
    reclaimable = by_label(once, "conda_env_reclaimable_bytes", "env")
    for env in ("alpha", "beta"):
        real = delete_and_clean(nested_root, [prefix_of(nested_root, env)], tmp_path)
        assert reclaimable[env] == real.freed_bytes, env
    proc = subprocess.run([*exporter_cmd, "report", "--root", str(nested_root), "--what-if-delete", "beta",
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(package_dir(nested_root, "labtool")) in proc.stdout  # cleanable once beta is gone


def test_recognition_rule(tmp_path: Path) -> None:
    """Which dirs are channel/platform levels and which are entries (package, leftover) dirs."""
    pkgs = tmp_path / "pkgs"
    extract(tmp_path, "", "flat-1.0-0", {"lib/flat.so": 1000})
    extract(tmp_path, "conda-forge/linux-64", "deep-1.0-0", {"lib/deep.so": 1000}, archive=False)
    extract(tmp_path, "my-org-channel/noarch", "org-1.0-0", {"x.py": 10})
    (pkgs / "half-1.0-0" / "lib").mkdir(parents=True)  # flat, half-extracted, only a dir at its top
    (pkgs / "half-1.0-0" / "lib" / "half.so").write_bytes(b"h" * 100)
    (pkgs / "conda-forge" / "noarch" / "docs-1-0" / "share" / "info").mkdir(parents=True)  # share/info/
    (pkgs / "conda-forge" / "noarch" / "docs-1-0" / "share" / "info" / "dir").write_text("x")
    (pkgs / "conda-forge" / "noarch" / "empty-1-0" / "lib").mkdir(parents=True)  # nothing in it yet
    (pkgs / "conda-forge" / "noarch" / "late-2.0-0" / "bin").mkdir(parents=True)  # beside its archive
    (pkgs / "conda-forge" / "noarch" / "late-2.0-0.conda").write_bytes(b"a")
    (pkgs / "conda-forge" / "osx-64").mkdir()  # emptied platform dir
    (pkgs / "bio-conda-mirror").mkdir()  # emptied, but named like a package: cannot tell, an entry
    (pkgs / ".trash").mkdir()
    (pkgs / "newchan" / "linux-64").mkdir(parents=True)  # a download under way in a new channel
    (pkgs / "newchan" / "linux-64" / "new-1-0.conda.partial").write_bytes(b"p")
    listing = list_cache(str(pkgs))
    rel = {str(Path(p).relative_to(pkgs)) for p in listing.entries}
    assert rel == {"flat-1.0-0", "half-1.0-0", ".trash", "bio-conda-mirror", "conda-forge/linux-64/deep-1.0-0",
                   "conda-forge/noarch/docs-1-0", "conda-forge/noarch/empty-1-0", "conda-forge/noarch/late-2.0-0",
                   "my-org-channel/noarch/org-1.0-0"}
    assert {str(Path(p).relative_to(pkgs)) for p in listing.levels} == {
        "conda-forge", "conda-forge/linux-64", "conda-forge/noarch", "conda-forge/osx-64", "my-org-channel",
        "my-org-channel/noarch", "newchan", "newchan/linux-64"}


def test_levels_are_bounded_in_depth(tmp_path: Path) -> None:
    deep = "/".join(f"l{i}" for i in range(MAX_LEVEL_DEPTH + 3))
    extract(tmp_path, deep, "far-1.0-0", {"f": 10})
    extract(tmp_path, "/".join(f"l{i}" for i in range(MAX_LEVEL_DEPTH)), "near-1.0-0", {"f": 10})
    listing = list_cache(str(tmp_path / "pkgs"))
    assert max(p.count("/") for p in (str(Path(x).relative_to(tmp_path / "pkgs")) for x in listing.levels)) \
        == MAX_LEVEL_DEPTH - 1
    assert any(p.endswith("near-1.0-0") for p in listing.entries)
    assert not any("far-1.0-0" in p for p in listing.levels)


def test_channel_and_platform_dirs_are_watched_as_the_cache(nested_root: Path) -> None:
    layout = discover_root(str(nested_root))
    specs = watch_specs([layout])
    pkgs = str(nested_root / "pkgs")
    level = str(nested_root / "pkgs" / "https" / "repo.example.org" / "labs" / "linux-64")
    assert specs[level] == WatchSpec(level, "pkgs", str(nested_root), cache=pkgs)
    assert specs[level].targets("labtool-0.4-h0_0") == [Target("pkgs", pkgs, str(nested_root))]
    assert str(nested_root / "pkgs" / HALF) not in specs  # entries are not watched


def changed(before: dict[Target, Any], after: dict[Target, Any]) -> set[Target]:
    found = {t for t, stamp in after.items() if before.get(t) != stamp}
    return found | {Target("root", t.root, t.root) for t in set(before) - set(after)}


def comparable(text: str) -> dict[str, Any]:
    return {k: v for k, v in samples(text).items() if not k.startswith(MOVING)}


def _operations(root: Path) -> list[tuple[str, Callable[[], None]]]:
    pkgs = root / "pkgs"

    def new_nested_package() -> None:  # only conda-forge/linux-64/ changes in the cache
        extract(root, "conda-forge/linux-64", "pandas-2.2.0-py312_0", {"lib/pandas.so": 80_000})
        link(root, "alpha", pkgs / "conda-forge/linux-64/pandas-2.2.0-py312_0", "conda-forge/linux-64")

    def half_then_whole() -> None:
        half = pkgs / "conda-forge" / "noarch" / "tiny-1.0-0"
        (half / "tiny").mkdir(parents=True)
        (half / "tiny" / "a.py").write_bytes(content("tiny", 12_000))

    def finish() -> None:
        shutil.rmtree(pkgs / "conda-forge" / "noarch" / "tiny-1.0-0")
        extract(root, "conda-forge/noarch", "tiny-1.0-0", {"tiny/a.py": 12_000}, archive=False)

    return [
        ("link the unreferenced nested labdata into alpha", lambda: link(
            root, "alpha", package_dir(root, "labdata"), "https/repo.example.org/labs/noarch")),
        ("remove numpy from alpha", lambda: unlink(root, "alpha", DISTS["numpy"])),
        ("extract and link a new package into a platform dir", new_nested_package),
        ("a new channel with a package, linked into beta", lambda: link(
            root, "beta", extract(root, "bioconda/noarch", "biotool-1.1-pyh0_0", {"bin/biotool": 40_000}),
            "bioconda/noarch")),
        ("an extraction interrupted in a platform dir", half_then_whole),
        ("the extraction finished", finish),
        ("conda clean -t of one nested tarball", (pkgs / "conda-forge/linux-64" / f"{DISTS['numpy']}.conda").unlink),
        ("conda clean -p of the unreferenced numpy", lambda: shutil.rmtree(package_dir(root, "numpy"))),
        ("remove labtool from beta", lambda: unlink(root, "beta", DISTS["labtool"])),
        ("delete env beta", lambda: shutil.rmtree(root / "envs" / "beta")),
    ]


def test_incremental_rescans_follow_the_nested_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", 0)  # totals from the change, never afresh
    walked: list[str] = []

    def counted(kind: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            walked.append(kind)
            return real(*args)
        return wrapper

    monkeypatch.setattr(exporter.daemon.incremental, "measure_cache", counted("cache", measure_cache))
    monkeypatch.setattr(exporter.daemon.incremental, "remeasure_chunk", counted("chunk", remeasure_chunk))
    root = build_nested_root(tmp_path / "conda")
    layouts: dict[str, RootLayout] = {str(root): discover_root(str(root))}
    snapshot = full_scan(list(layouts.values()), OPTIONS)
    assert every_mismatch(exposition(snapshot), root) == []
    for what, operation in _operations(root):
        walked.clear()
        before = fingerprints(watch_specs(layouts.values()).values())
        operation()
        targets = changed(before, fingerprints(watch_specs(layouts.values()).values()))
        if "extract" in what or "clean" in what:  # a change below a channel/platform dir is the cache's
            assert Target("pkgs", str(root / "pkgs"), str(root)) in targets, what
        layouts = rediscover(targets, [str(root)], layouts, lambda r, _layouts: discover_root(r))
        snapshot = rescan(snapshot, targets, roots=[str(root)], layouts=layouts, options=OPTIONS,
                          started=time.monotonic()).snapshot
        text = exposition(snapshot)
        assert every_mismatch(text, root) == [], what
        fresh = full_scan(list(layouts.values()), OPTIONS)
        assert comparable(text) == comparable(exposition(fresh)), what
        assert replace(snapshot.reclaim, evaluated_at=0) == replace(fresh.reclaim, evaluated_at=0), what
        if what.startswith(("link the unreferenced", "remove numpy")):
            assert walked == ["chunk"], (what, walked)  # only the chunk holding the nested entry
    assert by_label(text, "conda_pkgs_leftover_bytes", "pkgs_dir") == {
        str(root / "pkgs"): blocks_of(root / "pkgs" / HALF)}
