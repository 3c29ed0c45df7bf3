"""What deleting envs frees, checked by doing it: copy the root, delete the envs, apply conda's clean rule
with find, and compare du before/after with the exporter's prediction (tests/deletion.py). Exact."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deletion import delete_and_clean
from tests.exposition import samples
from tests.fixture_tree import build_fixture_root
from tests.realconda import RealRoot

NOBODY = 65534  # a uid with a name (nobody)
NAMELESS = 4242  # a uid no user has: the owner label is the number
DAY = 86400


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}


def once(exporter_cmd: list[str], root: Path, *args: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(root), *args], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    return samples(proc.stdout)


def by_prefix(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> dict[str, float]:
    return {dict(labels)["prefix"]: value for labels, value in metrics[name].items()}


def what_if(exporter_cmd: list[str], root: Path, envs: list[str]) -> dict[str, object]:
    proc = subprocess.run([*exporter_cmd, "report", "--root", str(root), "--format", "json", "--what-if-delete",
                           *envs], capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def chown_tree(top: Path, uid: int) -> None:
    subprocess.run(["chown", "-R", "-h", f"{uid}:{uid}", str(top)], check=True)


@pytest.fixture(scope="module")
def owned_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture root with envs of three owners (root, nobody, a uid without a name) and two stale envs
    (history last changed 200 days ago, set with touch -d)."""
    if os.geteuid() != 0:
        pytest.skip("chown to other users needs root")
    root = build_fixture_root(tmp_path_factory.mktemp("reclaim") / "conda")
    chown_tree(root / "envs" / "web", NOBODY)
    chown_tree(root / "envs" / "analysis", NOBODY)
    chown_tree(root / "envs" / "science", NAMELESS)
    for name in ("web", "science"):
        subprocess.run(["touch", "-d", "200 days ago", str(root / "envs" / name / "conda-meta" / "history")],
                       check=True)
    return root


def test_each_env_alone(exporter_cmd: list[str], owned_root: Path, tmp_path: Path) -> None:
    metrics = once(exporter_cmd, owned_root)
    reclaim = by_prefix(metrics, "conda_env_reclaimable_bytes")
    unique = by_prefix(metrics, "conda_env_unique_bytes")
    assert set(reclaim) == set(unique)
    for prefix, predicted in reclaim.items():
        assert predicted >= unique[prefix], prefix
        if prefix == str(owned_root):
            continue  # the base env: conda cannot delete it, so there is nothing to do for real
        assert predicted == delete_and_clean(owned_root, [Path(prefix)], tmp_path).freed_bytes, prefix
    # not vacuous: some env frees more than its own files, through a package dir clean then removes
    assert any(reclaim[p] > unique[p] for p in reclaim)


def test_each_owner_and_the_stale_envs(exporter_cmd: list[str], owned_root: Path, tmp_path: Path) -> None:
    metrics = once(exporter_cmd, owned_root)
    envs = owned_root / "envs"
    owners = {dict(k)["owner"]: v for k, v in metrics["conda_owner_reclaimable_bytes"].items()}
    counts = {dict(k)["owner"]: v for k, v in metrics["conda_owner_envs"].items()}
    assert counts == {"nobody": 2, str(NAMELESS): 1}  # the base env (root's) is in no owner's set
    nobody = delete_and_clean(owned_root, [envs / "web", envs / "analysis"], tmp_path).freed_bytes
    assert owners["nobody"] == nobody
    assert owners[str(NAMELESS)] == delete_and_clean(owned_root, [envs / "science"], tmp_path).freed_bytes
    # the owner's total is not the sum of its envs' figures: web and analysis share a file only with each other
    per_env = by_prefix(metrics, "conda_env_reclaimable_bytes")
    assert nobody > per_env[str(envs / "web")] + per_env[str(envs / "analysis")]

    stale = {dict(k)["root"]: v for k, v in metrics["conda_root_stale_envs"].items()}
    stale_bytes = {dict(k)["root"]: v for k, v in metrics["conda_root_stale_reclaimable_bytes"].items()}
    assert stale == {str(owned_root): 2}
    real = delete_and_clean(owned_root, [envs / "web", envs / "science"], tmp_path).freed_bytes
    assert stale_bytes == {str(owned_root): real}
    # a longer stale age: nothing is stale
    longer = once(exporter_cmd, owned_root, "--stale.after", str(365 * DAY))
    assert {dict(k)["root"]: v for k, v in longer["conda_root_stale_envs"].items()} == {str(owned_root): 0}


def test_what_if_any_set(exporter_cmd: list[str], owned_root: Path, tmp_path: Path) -> None:
    envs = owned_root / "envs"
    names = ["analysis", "science", "web"]
    rng = random.Random(7)
    sets = [["analysis", "science"], names, [rng.choice(names)], rng.sample(names, 2)]
    for chosen in sets:
        # by name and by prefix alike
        given = [name if i % 2 else str(envs / name) for i, name in enumerate(chosen)]
        predicted = what_if(exporter_cmd, owned_root, given)
        real = delete_and_clean(owned_root, [envs / n for n in chosen], tmp_path)
        assert predicted["freed_bytes"] == real.freed_bytes, chosen
        dirs = predicted["package_dirs"]
        assert isinstance(dirs, list)
        assert sorted(Path(d["path"]).name for d in dirs) == list(real.packages_removed), chosen
    assert what_if(exporter_cmd, owned_root, names)["packages_removed"], "deleting every env frees some package"


def test_what_if_names_that_do_not_fit_are_usage_errors(exporter_cmd: list[str], tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    twin = tmp_path / "other" / "envs" / "web"
    (twin / "conda-meta").mkdir(parents=True)
    for given, says in ((["no-such-env"], "no env named or at 'no-such-env'"), (["web"], "names 2 envs")):
        extra = [*("--env", str(twin))] if given == ["web"] else []
        proc = subprocess.run([*exporter_cmd, "report", "--root", str(root), *extra, "--what-if-delete", *given],
                              capture_output=True, text=True, timeout=120, env=clean_env())
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("conda-env-exporter: error: --what-if-delete:") and says in last, proc.stderr


def test_generated_tree(exporter_cmd: list[str], tmp_path: Path) -> None:
    """The benchmark generator's small tree: packages two names of one inode inside themselves (never
    cleaned), orphaned packages, copies, pip files."""
    tree = tmp_path / "small"
    subprocess.run([sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "generate.py"), "--size",
                    "small", "--out", str(tree)], check=True, capture_output=True, timeout=300)
    reclaim = by_prefix(once(exporter_cmd, tree), "conda_env_reclaimable_bytes")
    envs = sorted(p for p in reclaim if p != str(tree))
    assert len(envs) >= 3
    for prefix in envs:
        assert reclaim[prefix] == delete_and_clean(tree, [Path(prefix)], tmp_path).freed_bytes, prefix
    rng = random.Random(3)
    for chosen in (envs, rng.sample(envs, 2), rng.sample(envs, 3)):
        predicted = what_if(exporter_cmd, tree, chosen)["freed_bytes"]
        assert predicted == delete_and_clean(tree, [Path(p) for p in chosen], tmp_path).freed_bytes, chosen


def test_real_installer_root(exporter_cmd: list[str], real_conda_root: RealRoot, tmp_path: Path) -> None:
    """Envs py-rattler installed, one of them from a cache on another filesystem (all copies: it shares
    nothing with the root's cache). The copy of the root leaves that cache out: nothing in the root can
    make a package of it cleanable, as hardlinks do not cross filesystems."""
    root = real_conda_root.root
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(root)], capture_output=True, text=True,
                          timeout=120, env={**clean_env(), "HOME": str(root.parent)})
    assert proc.returncode == 0, proc.stderr
    metrics = samples(proc.stdout)
    reclaim = by_prefix(metrics, "conda_env_reclaimable_bytes")
    unique = by_prefix(metrics, "conda_env_unique_bytes")
    checked = 0
    for prefix, predicted in reclaim.items():
        if prefix == str(root) or not prefix.startswith(str(root) + "/"):
            continue
        assert predicted == delete_and_clean(root, [Path(prefix)], tmp_path).freed_bytes, prefix
        checked += 1
    assert checked >= 3
    if real_conda_root.copied_env is not None:
        copied = str(real_conda_root.copied_env)
        assert reclaim[copied] == unique[copied]


def test_stale_is_judged_at_scan_time(exporter_cmd: list[str], tmp_path: Path) -> None:
    """An env without conda-meta/history has no known age and is never stale; one changed just now is not."""
    root = build_fixture_root(tmp_path / "conda")
    (root / "envs" / "web" / "conda-meta" / "history").unlink()
    old = time.time() - 400 * DAY
    os.utime(root / "envs" / "analysis" / "conda-meta" / "history", (old, old))
    metrics = once(exporter_cmd, root)
    assert {dict(k)["root"]: v for k, v in metrics["conda_root_stale_envs"].items()} == {str(root): 1}
    alone = by_prefix(metrics, "conda_env_reclaimable_bytes")[str(root / "envs" / "analysis")]
    assert {dict(k)["root"]: v for k, v in metrics["conda_root_stale_reclaimable_bytes"].items()} == {str(root): alone}
