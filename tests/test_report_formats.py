"""``report --format table|json|csv`` and ``--sort``: one row per env with the page's fields, its numbers
those of /metrics (``--once``) and of find/du, in the order asked for; an unknown key is a usage error."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.exposition import samples
from tests.oracle import tree_numbers

# The documented env fields (README "The page", exporter/expose/report.py), written out here by hand.
ENV_FIELDS = ["root", "name", "prefix", "owner", "python_version", "unique_bytes", "shared_bytes", "apparent_bytes",
              "reclaimable_bytes", "files", "hardlinked_files", "packages", "untracked_bytes", "copied_bytes",
              "last_transaction", "scan_errors"]
# The report's JSON shape before --sort and csv existed: still all there.
OLD_SHAPE = {"envs", "caches", "owners", "stale", "roots", "scan_errors"}
OLD_CACHE_FIELDS = {"root", "path", "bytes", "packages", "unreferenced_packages", "unreferenced_bytes", "tarballs",
                    "tarball_bytes"}
# field -> the series of /metrics with its value
SERIES = {"unique_bytes": "conda_env_unique_bytes", "shared_bytes": "conda_env_shared_bytes",
          "apparent_bytes": "conda_env_apparent_bytes", "reclaimable_bytes": "conda_env_reclaimable_bytes",
          "files": "conda_env_files", "hardlinked_files": "conda_env_hardlinked_files",
          "packages": "conda_env_packages",
          "untracked_bytes": "conda_env_untracked_bytes", "copied_bytes": "conda_env_copied_bytes",
          "last_transaction": "conda_env_last_transaction_timestamp_seconds", "scan_errors": "conda_env_scan_errors"}


def report(exporter_cmd: list[str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*exporter_cmd, "report", "--root", str(root), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def exposition(exporter_cmd: list[str], fixture_root: Path) -> dict[str, dict[tuple[str, str], float]]:
    """``--once``'s env series: {series: {(env, prefix): value}}."""
    proc = subprocess.run([*exporter_cmd, "--once", "--root", str(fixture_root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {name: {(dict(k)["env"], dict(k)["prefix"]): v for k, v in samples(proc.stdout)[name].items()}
            for name in SERIES.values()}


def test_json_has_the_documented_shape_and_the_metrics_numbers(
    exporter_cmd: list[str], fixture_root: Path, exposition: dict[str, dict[tuple[str, str], float]]
) -> None:
    proc = report(exporter_cmd, fixture_root, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert set(document) >= OLD_SHAPE and document["sort"] == "unique"
    assert all(set(cache) >= OLD_CACHE_FIELDS for cache in document["caches"])
    envs: list[dict[str, Any]] = document["envs"]
    assert {(e["name"], e["prefix"]) for e in envs} == set(exposition["conda_env_unique_bytes"])
    for env in envs:
        assert list(env) == ENV_FIELDS
        for field, series in SERIES.items():
            assert env[field] == exposition[series][(env["name"], env["prefix"])], (env["name"], field)
    web = next(e for e in envs if e["name"] == "web")
    oracle = tree_numbers(fixture_root / "envs" / "web")  # find, not the exporter
    assert (web["unique_bytes"], web["shared_bytes"], web["files"]) == (oracle.unique_bytes, oracle.shared_bytes,
                                                                         oracle.files)


def test_csv_has_a_header_and_one_row_per_env(
    exporter_cmd: list[str], fixture_root: Path, exposition: dict[str, dict[tuple[str, str], float]]
) -> None:
    proc = report(exporter_cmd, fixture_root, "--format", "csv", "--sort", "name")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ENV_FIELDS
    records = [dict(zip(ENV_FIELDS, row, strict=True)) for row in rows[1:]]
    assert len(records) == len(exposition["conda_env_unique_bytes"])
    assert [r["name"] for r in records] == sorted((r["name"] for r in records), key=str.casefold)
    for record in records:
        for field, series in SERIES.items():
            assert float(record[field]) == exposition[series][(record["name"], record["prefix"])], field


@pytest.mark.parametrize(("key", "field", "descending"), [
    ("unique", "unique_bytes", True), ("reclaimable", "reclaimable_bytes", True), ("shared", "shared_bytes", True),
    ("apparent", "apparent_bytes", True), ("packages", "packages", True), ("untracked", "untracked_bytes", True),
    ("last-transaction", "last_transaction", False), ("name", "name", False), ("prefix", "prefix", False),
])
def test_sort_orders_the_envs_by_the_key(
    exporter_cmd: list[str], fixture_root: Path, key: str, field: str, descending: bool
) -> None:
    proc = report(exporter_cmd, fixture_root, "--format", "json", "--sort", key)
    assert proc.returncode == 0, proc.stderr
    values = [env[field] for env in json.loads(proc.stdout)["envs"]]
    expected = sorted(values, key=lambda v: v.casefold() if isinstance(v, str) else v, reverse=descending)
    assert values == expected and len(set(map(str, values))) > 1, values  # a real order, not all ties


def test_table_follows_the_sort_too(exporter_cmd: list[str], fixture_root: Path) -> None:
    proc = report(exporter_cmd, fixture_root, "--sort", "name")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines[1 : lines.index("")]]
    assert names == sorted(names, key=str.casefold) and len(names) >= 4


@pytest.mark.parametrize("args", [("--sort", "size"), ("--format", "csv", "--what-if-delete", "web"),
                                  ("--format", "xml")])
def test_a_wrong_report_request_is_one_usage_line(exporter_cmd: list[str], fixture_root: Path,
                                                  args: tuple[str, ...]) -> None:
    proc = report(exporter_cmd, fixture_root, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("conda-env-exporter: error:"), proc.stderr
    if args[0] == "--sort":
        assert "'size'" in proc.stderr and "reclaimable" in proc.stderr  # names the key and the choices


def test_what_if_delete_still_answers(exporter_cmd: list[str], fixture_root: Path) -> None:
    proc = report(exporter_cmd, fixture_root, "--format", "json", "--what-if-delete", "web")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["envs"][0]["name"] == "web" and answer["freed_bytes"] >= answer["unique_bytes"] > 0
