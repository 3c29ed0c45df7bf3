"""Build the README's worked example root and print the exporter's report of it.

    .venv/bin/python benchmarks/worked_example.py /tmp/worked     # the directory must not exist

The cache holds python (30 MiB), numpy (20 MiB), scipy (40 MiB) and pytorch (60 MiB). ``current``
(owned by root, changed today) has python and numpy; ``old-analysis`` and ``old-ml`` (owned by
``nobody``, last changed 200 days ago) have python, numpy and pytorch, and ``old-ml`` also 5 MiB that
pip put in site-packages. Nothing uses scipy. Run as root (for the chown); the figures in README.md
were printed by this script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from exporter.demo import SP, DemoPackage, link_package, write_package

MIB = 1 << 20
PACKAGES = {
    "python": DemoPackage("python", "3.11.7", "h955ad1f_0", {"lib/libpython3.11.so": 30 * MIB}),
    "numpy": DemoPackage("numpy", "1.26.4", "py311h64a7726_0", {f"{SP}/numpy/core/_umath.so": 20 * MIB}),
    "scipy": DemoPackage("scipy", "1.12.0", "py311h64a7726_2", {f"{SP}/scipy/linalg/_flapack.so": 40 * MIB}),
    "pytorch": DemoPackage("pytorch", "2.2.0", "cpu_py311h0", {f"{SP}/torch/lib/libtorch_cpu.so": 60 * MIB}),
}
ENVS = {"current": ("python", "numpy"), "old-analysis": ("python", "numpy", "pytorch"),
        "old-ml": ("python", "numpy", "pytorch")}
NOBODY = 65534


def build(root: Path) -> None:
    pkgs = root / "pkgs"
    pkgs.mkdir(parents=True)
    (root / "conda-meta").mkdir()
    (root / "conda-meta" / "history").write_text("")
    for package in PACKAGES.values():
        write_package(pkgs, package)
    old = time.time() - 200 * 86400
    for name, packages in ENVS.items():
        prefix = root / "envs" / name
        (prefix / "conda-meta").mkdir(parents=True)
        for package_name in packages:
            link_package(prefix, pkgs, PACKAGES[package_name], copy=False)
        history = prefix / "conda-meta" / "history"
        history.write_text(f"# cmd: conda create -n {name}\n")
        if name.startswith("old-"):
            if name == "old-ml":
                (prefix / SP / "transformers").mkdir(parents=True)
                (prefix / SP / "transformers" / "weights.bin").write_bytes(os.urandom(5 * MIB))
            os.utime(history, (old, old))
            subprocess.run(["chown", "-R", "-h", f"{NOBODY}:{NOBODY}", str(prefix)], check=True)
            os.utime(history, (old, old))


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/worked")
    if root.exists():
        print(f"{root} exists: give a new directory", file=sys.stderr)
        return 2
    build(root)
    exporter = Path(sys.executable).with_name("conda-env-exporter")
    return subprocess.run([str(exporter), "report", "--root", str(root), "--log.level", "warning"]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
