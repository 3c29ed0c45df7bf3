"""Every layout users have: several roots, .condarc and CONDA_* dirs, single envs, pixi, other filesystems."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.demo import DemoPackage, link_package, write_package
from exporter.discover.roots import discover_external, discover_root
from tests.exposition import samples
from tests.oracle import contents_numbers, du_bytes, tree_numbers

NUMPY = DemoPackage("numpy", "1.26.4", "py311_0", {"lib/numpy/core.so": 50_000, "lib/numpy/__init__.py": 3_000})
PYTHON = DemoPackage("python", "3.12.1", "h0", {"bin/python3.12": 30_000})


def make_env(prefix: Path, pkgs: Path, packages: list[DemoPackage], copy: bool = False) -> Path:
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "history").write_text("")
    for package in packages:
        link_package(prefix, pkgs, package, copy)
    return prefix


def make_root(root: Path, envs: dict[str, list[DemoPackage]]) -> Path:
    pkgs = root / "pkgs"
    pkgs.mkdir(parents=True)
    for package in (NUMPY, PYTHON):
        write_package(pkgs, package)
    make_env(root, pkgs, [PYTHON])
    for name, packages in envs.items():
        make_env(root / "envs" / name, pkgs, packages)
    return root


def once(exporter_cmd: list[str], *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    proc = subprocess.run(
        [*exporter_cmd, "--once", *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def series(text: str, metric: str) -> dict[str, dict[str, str]]:
    """prefix label -> all labels, for one metric; and the value under key '_value'."""
    out = {}
    for labels, value in samples(text)[metric].items():
        d = dict(labels)
        d["_value"] = str(value)
        out[d.get("prefix", d.get("pkgs_dir", ""))] = d
    return out


def test_two_roots_with_the_same_env_name(exporter_cmd: list[str], tmp_path: Path) -> None:
    a = make_root(tmp_path / "a", {"dup": [NUMPY, PYTHON]})
    b = make_root(tmp_path / "b", {"dup": [NUMPY]})
    text = once(exporter_cmd, "--root", str(a), "--root", str(b), HOME=str(tmp_path))
    unique = series(text, "conda_env_unique_bytes")
    for root in (a, b):
        prefix = root / "envs" / "dup"
        assert unique[str(prefix)]["env"] == "dup" and unique[str(prefix)]["root"] == str(root)
        assert float(unique[str(prefix)]["_value"]) == tree_numbers(prefix).unique_bytes
    assert sorted(float(v) for v in samples(text)["conda_root_bytes"].values()) == sorted([du_bytes(a), du_bytes(b)])


def test_condarc_and_env_var_dirs_are_scanned(exporter_cmd: list[str], tmp_path: Path) -> None:
    root = make_root(tmp_path / "conda", {"inroot": [NUMPY]})
    other = tmp_path / "shared"
    (other / "pkgs").mkdir(parents=True)
    write_package(other / "pkgs", NUMPY)
    (root / ".condarc").write_text(f"envs_dirs:\n  - {other / 'envs'}\npkgs_dirs:\n  - {other / 'pkgs'}\n")
    from_rc = make_env(other / "envs" / "from-condarc", other / "pkgs", [NUMPY])
    copied = make_env(other / "envs" / "copied", other / "pkgs", [NUMPY], copy=True)
    by_var = make_env(tmp_path / "var-envs" / "from-var", other / "pkgs", [NUMPY])
    text = once(exporter_cmd, "--root", str(root), HOME=str(tmp_path), CONDA_ENVS_PATH=str(tmp_path / "var-envs"))
    unique = series(text, "conda_env_unique_bytes")
    for prefix in (from_rc, copied, by_var):
        assert unique[str(prefix)]["root"] == str(root), prefix
        assert float(unique[str(prefix)]["_value"]) == tree_numbers(prefix).unique_bytes, prefix
    expected = contents_numbers(copied, [root / "pkgs", other / "pkgs"])
    assert expected.copied_bytes > 0
    assert float(series(text, "conda_env_copied_bytes")[str(copied)]["_value"]) == expected.copied_bytes
    caches = series(text, "conda_pkgs_bytes")
    assert float(caches[str(other / "pkgs")]["_value"]) == du_bytes(other / "pkgs")
    assert float(series(text, "conda_pkgs_dedupable_bytes")[str(other / "pkgs")]["_value"]) == expected.copied_bytes


def test_single_env_outside_any_root(exporter_cmd: list[str], tmp_path: Path) -> None:
    pkgs = tmp_path / "cache"
    pkgs.mkdir()
    write_package(pkgs, PYTHON)
    env = make_env(tmp_path / "project" / "env", pkgs, [PYTHON])
    text = once(exporter_cmd, "--env", str(env), HOME=str(tmp_path))
    unique = series(text, "conda_env_unique_bytes")
    assert unique[str(env)]["root"] == "" and unique[str(env)]["env"] == "env"
    assert float(unique[str(env)]["_value"]) == tree_numbers(env).unique_bytes
    assert "conda_root_bytes" not in samples(text)


def test_env_that_is_not_an_env_is_a_usage_error(exporter_cmd: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([*exporter_cmd, "--once", "--env", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no conda-meta" in proc.stderr


def test_pixi_project_is_a_root(exporter_cmd: list[str], tmp_path: Path) -> None:
    cache = tmp_path / ".cache" / "rattler" / "cache" / "pkgs"
    cache.mkdir(parents=True)
    write_package(cache, NUMPY)
    project = tmp_path / "proj"
    env = make_env(project / ".pixi" / "envs" / "default", cache, [NUMPY])
    text = once(exporter_cmd, "--root", str(project), HOME=str(tmp_path))
    assert float(series(text, "conda_env_shared_bytes")[str(env)]["_value"]) == tree_numbers(env).shared_bytes > 0
    assert str(cache) in series(text, "conda_pkgs_bytes")


def test_stale_environments_txt_entry_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_root(tmp_path / "conda", {"a": [NUMPY]})
    loose = make_env(tmp_path / "loose", root / "pkgs", [NUMPY])
    known = [discover_root(str(root), environ={}, home=str(tmp_path))]
    with caplog.at_level(logging.INFO):
        layout = discover_external([str(tmp_path / "gone"), str(root / "envs" / "a"), str(loose)], known)
    assert layout is not None and [e.prefix for e in layout.envs] == [str(loose)]
    assert "gone" in caplog.text


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "otherfs"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_cache_on_another_filesystem_means_everything_copied(
    exporter_cmd: list[str], tmp_path: Path, tmpfs: Path
) -> None:
    pkgs = tmpfs / "pkgs"
    pkgs.mkdir()
    write_package(pkgs, NUMPY)
    root = tmp_path / "conda"
    env = make_env(root / "envs" / "far", pkgs, [NUMPY], copy=True)
    (root / ".condarc").write_text(f"pkgs_dirs: [{pkgs}]\n")
    text = once(exporter_cmd, "--root", str(root), HOME=str(tmp_path))
    numbers = tree_numbers(env)
    assert float(series(text, "conda_env_unique_bytes")[str(env)]["_value"]) == numbers.unique_bytes
    assert float(series(text, "conda_env_shared_bytes")[str(env)]["_value"]) == 0
    expected = contents_numbers(env, [pkgs])
    assert float(series(text, "conda_env_copied_bytes")[str(env)]["_value"]) == expected.copied_bytes > 0
    # hardlinks cannot cross filesystems: nothing is dedupable
    assert float(series(text, "conda_pkgs_dedupable_bytes")[str(pkgs)]["_value"]) == 0
