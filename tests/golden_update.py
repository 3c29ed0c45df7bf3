"""The golden whole exposition (tests/golden/exposition.txt): how it is produced, how it is normalised,
and, run as a module, its regeneration (and that of tests/golden/families.txt, its HELP and TYPE lines)::

    .venv/bin/python -m tests.golden_update

It is ``conda-env-exporter --once`` over the fixture root (tests/fixture_tree.py), normalised so that
it is the same on every machine and run: the root's path is ``$ROOT``; what depends on the clock, the
machine or the filesystem's allocation is masked (see :data:`MASKS`); counts stay literal.
``<bytes>`` marks a value that tests/test_exposition_golden.py checks against the find/du oracle
instead. Nothing here runs during a test run except :func:`run_once` and :func:`normalise`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fixture_tree import build_fixture_root

GOLDEN = Path(__file__).with_name("golden") / "exposition.txt"
FAMILIES = Path(__file__).with_name("golden") / "families.txt"
EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))
ROOT_PLACEHOLDER = "$ROOT"

# (pattern on the sample name, placeholder): the first that matches masks the sample's value.
MASKS: tuple[tuple[str, str], ...] = (
    (r"_timestamp_seconds$", "<timestamp>"),  # Unix times: of the scan, of history files
    (r"^conda_exporter_last_scan_duration_seconds$", "<seconds>"),
    (r"_duration_seconds_sum$", "<seconds>"),
    (r"^conda_root_filesystem_avail_bytes$", "<avail>"),  # moves with every write on the filesystem
    (r"_bytes$", "<bytes>"),  # allocation (and directory sizes) differ by filesystem: checked by the oracle
)
# Histogram buckets of durations depend on how long the scan took, except +Inf (the number of scans).
DURATION_BUCKET = re.compile(r'^[a-z_]+_duration_seconds_bucket\{(?![^}]*le="\+Inf")')
# (sample name pattern, label, placeholder): label values that depend on the machine or user.
LABEL_MASKS: tuple[tuple[str, str, str], ...] = (
    (r"^conda_exporter_build_info$", "version", "<version>"),
    (r"^conda_exporter_build_info$", "python_version", "<python>"),
    (r"^conda_exporter_build_info$", "walker", "<walker>"),  # native, or python without a C compiler
    (r".", "owner", "<owner>"),
)


def clean_env(home: str) -> dict[str, str]:
    """The environment without conda's and the exporter's own variables, with an empty ``HOME``: a
    developer's ``~/.condarc`` or ``CONDA_*`` settings would add dirs to the root or change options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    env["HOME"] = home
    return env


def run_once(exporter_cmd: list[str], root: Path, *extra: str) -> str:
    """``--once`` over ``root`` in a clean environment: the exposition as printed."""
    with tempfile.TemporaryDirectory(prefix="golden-home-") as home:
        proc = subprocess.run([*exporter_cmd, "--once", "--root", str(root), *extra], capture_output=True,
                              text=True, timeout=120, env=clean_env(home))
    if proc.returncode != 0:
        raise RuntimeError(f"conda-env-exporter --once failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def _normalise_sample(line: str) -> str:
    series, value = line.rsplit(" ", 1)
    name = series.split("{", 1)[0]
    for pattern, label, placeholder in LABEL_MASKS:
        if re.search(pattern, name):
            series = re.sub(rf'(?<=[{{,]){label}="[^"]*"', f'{label}="{placeholder}"', series)
    if DURATION_BUCKET.match(line):
        return f"{series} <bucket>"
    for pattern, placeholder in MASKS:
        if re.search(pattern, name):
            return f"{series} {placeholder}"
    return f"{series} {value}"


def normalise(text: str, root: Path) -> str:
    """``text`` with ``root`` as ``$ROOT`` and the volatile values and labels masked."""
    text = text.replace(str(root), ROOT_PLACEHOLDER)
    return "".join(
        (line if line.startswith("#") or not line else _normalise_sample(line)) + "\n" for line in text.splitlines()
    )


def families(text: str) -> str:
    """The HELP and TYPE lines of an exposition (tests/test_docs.py reads the metric table's types there)."""
    return "".join(line + "\n" for line in text.splitlines() if line.startswith(("# HELP", "# TYPE")))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        root = build_fixture_root(Path(tmp) / "conda")
        text = run_once([EXPORTER], root)
    GOLDEN.write_text(normalise(text, root))
    FAMILIES.write_text(families(text))
    print(f"wrote {GOLDEN} and {FAMILIES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
