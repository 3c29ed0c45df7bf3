"""The command starts fast (issue #17): what a command never uses is imported only by the command that does.
Each case runs in a fresh interpreter and lists the heavy modules loaded when the command has finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# (not asyncio nor ssl: pydantic-settings, which reads the settings, imports them at every start)
HEAVY = (
    "yaml", "http.server", "bcrypt", "prometheus_client",
    "exporter.expose.report", "exporter.demo", "exporter.expose.server", "exporter.expose.page", "exporter.daemon",
)


def loaded_after(argv: list[str] | None) -> set[str]:
    """The modules of HEAVY loaded once ``exporter.cli`` is imported and, unless None, ``main(argv)`` has run."""
    code = (
        "import io, contextlib, json, sys\n"
        "import exporter.cli\n"
        f"argv = {argv!r}\n"
        "if argv is not None:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert exporter.cli.main(argv) == 0\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout))


def test_importing_the_command_line_leaves_out_what_no_scan_uses() -> None:
    assert loaded_after(None) == set()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["--once"], {"prometheus_client", "http.server"}),  # (prometheus_client's package imports http.server)
        (["report"], {"exporter.expose.report"}),
        (["report", "--format", "json"], {"exporter.expose.report"}),
    ],
)
def test_a_command_imports_only_what_it_uses(fixture_root: Path, command: list[str], expected: set[str]) -> None:
    """The fixture root has no conda configuration file: PyYAML is not imported either."""
    assert loaded_after([*command, "--root", str(fixture_root), "--scan.workers", "1"]) == expected
