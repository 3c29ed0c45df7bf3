"""Every metric, on envs a real installer (py-rattler) wrote, against the find/du oracle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.condaops import ENV_METRICS
from tests.exposition import samples
from tests.oracle import contents_numbers, du_apparent_bytes, du_bytes, du_total_bytes, pkgs_oracle, tree_numbers
from tests.realconda import RealRoot

CONTENTS = {
    "conda_env_packages": "packages",
    "conda_env_untracked_bytes": "untracked_bytes",
    "conda_env_untracked_files": "untracked_files",
    "conda_env_copied_bytes": "copied_bytes",
}


@pytest.fixture(scope="module")
def exposition(exporter_cmd: list[str], real_conda_root: RealRoot) -> dict[str, dict[str, dict[str, float]]]:
    """metric -> prefix (or pkgs dir) -> value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    proc = subprocess.run(
        [*exporter_cmd, "--once", "--root", str(real_conda_root.root)],
        capture_output=True, text=True, timeout=120, env={**env, "HOME": str(real_conda_root.root.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, series in samples(proc.stdout).items():
        for labels, value in series.items():
            d = dict(labels)
            out.setdefault(name, {})[d.get("prefix") or d.get("pkgs_dir") or d.get("root", "")] = {"v": value}
    return out


def value(exposition: dict[str, dict[str, dict[str, float]]], metric: str, key: Path) -> float:
    return exposition[metric][str(key)]["v"]


def pkgs_dirs(real: RealRoot) -> list[Path]:
    return [real.pkgs] + ([real.copied_cache] if real.copied_cache else [])


def test_every_env_metric_matches_the_oracle(exposition: dict[str, dict[str, dict[str, float]]],
                                             real_conda_root: RealRoot) -> None:
    real = real_conda_root
    assert set(exposition["conda_env_unique_bytes"]) == {str(p) for p in real.envs.values()}
    for name, prefix in real.envs.items():
        prune = [real.root / "envs", real.pkgs] if name == "base" else []
        tree = tree_numbers(prefix, prune)
        contents = contents_numbers(prefix, pkgs_dirs(real), prune)
        for metric, attr in ENV_METRICS.items():
            assert value(exposition, metric, prefix) == getattr(tree, attr), (metric, name)
        for metric, attr in CONTENTS.items():
            assert value(exposition, metric, prefix) == getattr(contents, attr), (metric, name)
        if name != "base":
            assert value(exposition, "conda_env_unique_bytes", prefix) + value(
                exposition, "conda_env_shared_bytes", prefix) == du_bytes(prefix)
            assert value(exposition, "conda_env_apparent_bytes", prefix) == du_apparent_bytes(prefix)


def test_every_cache_metric_matches_conda_rules(exposition: dict[str, dict[str, dict[str, float]]],
                                                real_conda_root: RealRoot) -> None:
    for cache in pkgs_dirs(real_conda_root):
        for metric, expected in pkgs_oracle(cache).items():
            assert value(exposition, metric, cache) == expected, (metric, cache)
    # delta's only env was deleted: the one package conda clean -p would remove from the shared cache
    assert value(exposition, "conda_pkgs_unreferenced_packages", real_conda_root.pkgs) == 1


def test_root_totals_match_du(exposition: dict[str, dict[str, dict[str, float]]], real_conda_root: RealRoot) -> None:
    """A root's totals cover the dirs its .condarc adds (here a cache on another filesystem) too."""
    root = real_conda_root.root
    trees = [root] + ([real_conda_root.copied_cache] if real_conda_root.copied_cache else [])
    assert value(exposition, "conda_root_bytes", root) == du_total_bytes(trees)
    assert value(exposition, "conda_root_apparent_bytes", root) == du_total_bytes(trees, apparent=True)


def test_what_the_installer_did_shows(exposition: dict[str, dict[str, dict[str, float]]],
                                      real_conda_root: RealRoot) -> None:
    real = real_conda_root
    assert str(real.deleted_env) not in exposition["conda_env_unique_bytes"]
    slim_records = [p.name for p in (real.removed_package_env / "conda-meta").glob("*.json")]
    assert not any(n.startswith(real.removed_package) for n in slim_records)
    assert value(exposition, "conda_env_packages", real.removed_package_env) == 2  # beta and alpha
    # the prefix-rewritten file is a single-link file of its own, but not a relinkable copy
    assert real.relocated_file.stat().st_nlink == 1
    assert value(exposition, "conda_env_copied_bytes", real.envs["full"]) == 0
    blocks = real.untracked_file.stat().st_blocks * 512
    assert value(exposition, "conda_env_untracked_bytes", real.envs["pip"]) >= blocks


def test_cache_on_another_filesystem_copies_everything(exposition: dict[str, dict[str, dict[str, float]]],
                                                       real_conda_root: RealRoot) -> None:
    real = real_conda_root
    if real.copied_env is None or real.copied_cache is None:
        pytest.skip("no second filesystem could be mounted (needs root): the copy-mode env was not built")
    assert value(exposition, "conda_env_shared_bytes", real.copied_env) == 0
    assert value(exposition, "conda_env_copied_bytes", real.copied_env) > 0
    # the copies cannot be hardlinked back across filesystems
    assert value(exposition, "conda_pkgs_dedupable_bytes", real.copied_cache) == 0
