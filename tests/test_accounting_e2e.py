"""End to end: the exporter's numbers for a fixture root equal an independent find/du oracle."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

import exporter.scan.walk
from exporter import cli
from tests.condaops import ENV_METRICS
from tests.exposition import by_label, samples
from tests.oracle import contents_numbers, du_apparent_bytes, du_bytes, pkgs_oracle, tree_numbers


def run_once(exporter_cmd: list[str], root: Path, *extra: str) -> str:
    proc = subprocess.run(
        [*exporter_cmd, "--once", "--root", str(root), *extra], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_once_python_walker(root: Path) -> str:
    """``--once`` in this process with exporter.scan.walk's Python loop (what runs where the C walker
    could not be built)."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(exporter.scan.walk, "_native", None)
        assert cli.main(["--once", "--root", str(root), "--scan.workers", "1"]) == 0
    return out.getvalue()


@pytest.fixture(scope="module", params=["1", "2", "python"], ids=["inline", "two-workers", "python-walker"])
def exposition(request: pytest.FixtureRequest, exporter_cmd: list[str], fixture_root: Path) -> str:
    if request.param == "python":
        return run_once_python_walker(fixture_root)
    return run_once(exporter_cmd, fixture_root, "--scan.workers", str(request.param))


def env_prefixes(root: Path) -> dict[str, Path]:
    envs = {"base": root}
    envs.update({p.name: p for p in (root / "envs").iterdir() if (p / "conda-meta").is_dir()})
    return envs


def test_every_env_matches_find_oracle(exposition: str, fixture_root: Path) -> None:
    prefixes = env_prefixes(fixture_root)
    assert set(by_label(exposition, "conda_env_unique_bytes", "env")) == set(prefixes)
    for env, prefix in prefixes.items():
        prune = [fixture_root / "envs", fixture_root / "pkgs"] if env == "base" else []
        expected = tree_numbers(prefix, prune)
        for metric, attr in ENV_METRICS.items():
            got = by_label(exposition, metric, "env")[env]
            assert got == getattr(expected, attr), f"{metric}{{env={env}}}"


def test_named_envs_add_up_to_du(exposition: str, fixture_root: Path) -> None:
    unique = by_label(exposition, "conda_env_unique_bytes", "env")
    shared = by_label(exposition, "conda_env_shared_bytes", "env")
    apparent = by_label(exposition, "conda_env_apparent_bytes", "env")
    for env, prefix in env_prefixes(fixture_root).items():
        if env == "base":
            continue
        assert unique[env] + shared[env] == du_bytes(prefix), env
        assert apparent[env] == du_apparent_bytes(prefix), env


def test_known_shapes_land_where_they_should(exposition: str, fixture_root: Path) -> None:
    """Hand-reasoned facts about the fixture, independent of any oracle code."""
    unique = by_label(exposition, "conda_env_unique_bytes", "env")
    shared = by_label(exposition, "conda_env_shared_bytes", "env")
    analysis = fixture_root / "envs" / "analysis"
    twice = (analysis / "twice-a").stat().st_blocks * 512
    pip_file = (analysis / "lib/python3.11/site-packages/seaborn/__init__.py").stat().st_blocks * 512
    with_web = (analysis / "shared-with-web.dat").stat().st_blocks * 512
    # an inode with both its names inside the env is unique, counted once; pip files are unique
    assert unique["analysis"] >= twice + pip_file
    # a file linked from web into analysis is shared by both and unique to neither
    assert shared["analysis"] >= with_web and shared["web"] >= with_web
    # science's pytorch lost its cache dir: its one link left makes it unique to science
    torch = fixture_root / "envs/science/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so"
    assert torch.stat().st_nlink == 1
    assert unique["science"] >= torch.stat().st_blocks * 512


def test_package_cache_matches_conda_rules(exposition: str, fixture_root: Path) -> None:
    expected = pkgs_oracle(fixture_root / "pkgs")
    got = samples(exposition)
    for metric, value in expected.items():
        assert list(got[metric].values()) == [value], metric
    assert expected["conda_pkgs_unreferenced_packages"] == 1  # matplotlib, by construction
    assert expected["conda_pkgs_tarballs"] == 1
    assert expected["conda_pkgs_index_cache_bytes"] >= 60_000
    assert expected["conda_pkgs_leftover_bytes"] >= 33_000 + 21_000


def test_root_totals_match_du(exposition: str, fixture_root: Path) -> None:
    got = samples(exposition)
    assert list(got["conda_root_bytes"].values()) == [du_bytes(fixture_root)]
    assert list(got["conda_root_apparent_bytes"].values()) == [du_apparent_bytes(fixture_root)]
    assert list(got["conda_root_envs"].values()) == [len(env_prefixes(fixture_root))]
    assert list(got["conda_root_ignored_dirs"].values()) == [1]  # envs/not-an-env


def test_non_env_dir_is_not_an_env(exposition: str) -> None:
    assert "not-an-env" not in by_label(exposition, "conda_env_files", "env")


def test_report_lists_envs_by_unique_bytes(exporter_cmd: list[str], fixture_root: Path, exposition: str) -> None:
    proc = subprocess.run(
        [*exporter_cmd, "report", "--root", str(fixture_root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines[1 : 1 + len(env_prefixes(fixture_root))]]
    unique = by_label(exposition, "conda_env_unique_bytes", "env")
    assert names == sorted(unique, key=lambda e: (-unique[e], str(env_prefixes(fixture_root)[e])))
    assert "conda clean -p" in proc.stdout and "without hardlinks" in proc.stdout


CONTENTS_METRICS = {
    "conda_env_packages": "packages",
    "conda_env_untracked_bytes": "untracked_bytes",
    "conda_env_untracked_files": "untracked_files",
    "conda_env_copied_bytes": "copied_bytes",
}


def test_contents_match_records_and_find(exposition: str, fixture_root: Path) -> None:
    for env, prefix in env_prefixes(fixture_root).items():
        prune = [fixture_root / "envs", fixture_root / "pkgs"] if env == "base" else []
        expected = contents_numbers(prefix, [fixture_root / "pkgs"], prune)
        for metric, attr in CONTENTS_METRICS.items():
            assert by_label(exposition, metric, "env")[env] == getattr(expected, attr), f"{metric}{{env={env}}}"


def test_contents_hand_checked(exposition: str, fixture_root: Path) -> None:
    """Facts of the fixture by construction: pandas copied into science, seaborn pip-installed, and
    science's torch kept a single link after its cache entry was deleted, which is not a copy."""
    science = fixture_root / "envs" / "science"
    pandas = [science / "lib/python3.11/site-packages/pandas/__init__.py",
              science / "lib/python3.11/site-packages/pandas/_libs/lib.so"]
    assert by_label(exposition, "conda_env_copied_bytes", "env")["science"] == sum(
        p.stat().st_blocks * 512 for p in pandas
    )
    dedupable = samples(exposition)["conda_pkgs_dedupable_bytes"]
    assert list(dedupable.values()) == [by_label(exposition, "conda_env_copied_bytes", "env")["science"]]
    seaborn = fixture_root / "envs/analysis/lib/python3.11/site-packages/seaborn/__init__.py"
    assert by_label(exposition, "conda_env_untracked_bytes", "env")["analysis"] >= seaborn.stat().st_blocks * 512
    info = samples(exposition)["conda_env_info"]
    assert {dict(k)["python_version"] for k in info} == {"3.11.7"}
    assert {dict(k)["owner"] for k in info} == {pwd.getpwuid(os.getuid()).pw_name}
    history = fixture_root / "envs" / "web" / "conda-meta" / "history"
    assert by_label(exposition, "conda_env_last_transaction_timestamp_seconds", "env")["web"] == history.stat().st_mtime


def test_top_packages_match_records_and_find(exporter_cmd: list[str], fixture_root: Path) -> None:
    text = run_once(exporter_cmd, fixture_root, "--collect.packages", "2")
    got: dict[str, dict[str, float]] = {}
    for labels, value in samples(text)["conda_env_package_bytes"].items():
        d = dict(labels)
        got.setdefault(d["env"], {})[d["package"]] = value
    for env, prefix in env_prefixes(fixture_root).items():
        blocks = {
            line.split("\0")[0]: int(line.split("\0")[1])
            for line in subprocess.run(
                ["find", str(prefix), "!", "-type", "d", "-printf", "%P\\0%b\\n"],
                check=True, capture_output=True, text=True,
            ).stdout.splitlines()
        }
        sizes = {}
        for record_file in (prefix / "conda-meta").glob("*.json"):
            record = json.loads(record_file.read_text())
            sizes[record["name"]] = sum(blocks.get(f, 0) for f in record["files"]) * 512
        top = dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:2])
        assert got.get(env, {}) == top, env
    assert "conda_env_package_bytes{" not in run_once(exporter_cmd, fixture_root)  # off by default
