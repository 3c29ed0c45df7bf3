"""The exposition's families, help strings and types are the public contract: compare with the golden
file, and have promtool (the Prometheus project's own linter) check the whole output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.exposition import samples

GOLDEN = Path(__file__).with_name("golden") / "families.txt"


@pytest.fixture(scope="module")
def exposition(exporter_cmd: list[str], fixture_root: Path) -> str:
    proc = subprocess.run(
        [*exporter_cmd, "--once", "--root", str(fixture_root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_families_help_and_types_match_golden(exposition: str) -> None:
    got = [line for line in exposition.splitlines() if line.startswith(("# HELP", "# TYPE"))]
    assert got == GOLDEN.read_text().splitlines()


def test_label_names_are_bounded(exposition: str) -> None:
    allowed = {"root", "env", "prefix", "pkgs_dir", "kind", "trigger", "result", "mode", "le", "package"}
    allowed |= {"version", "python_version", "owner", "walker"}  # info metrics: one series per env or process
    for name, series in samples(exposition).items():
        for labels in series:
            assert {k for k, _ in labels} <= allowed, name


def test_promtool_check_metrics_is_clean(exposition: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: tests/run installs Debian's prometheus package"
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr
