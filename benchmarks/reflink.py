"""What mapping extents costs on a filesystem that can reflink: a generated conda tree on an XFS loop mount
(``mkfs.xfs -m reflink=1``, root only), scanned with the extent maps and without them.

``python benchmarks/reflink.py [--size small] [--repeats 3] [--json]``:

1. makes an XFS filesystem on a sparse loop file and generates the ``--size`` tree on it
   (``benchmarks/generate.py``): envs hardlinked from the cache, as conda leaves them;
2. scans it in-process (``full_scan``, the workers of the default settings) with the extent maps and with
   them switched off, alternately, ``--repeats`` times each after one untimed warm-up of each, and times
   ``du -s`` alike;
3. counts the ``FS_IOC_FIEMAP`` ioctls of one ``--once`` run (``strace -f -c``, when installed);
4. turns every hardlinked env file into a reflink of its cache file (``FICLONE``, as pixi and uv install),
   and measures again.

Reports seconds (median, min, max) of each, the ratios to the plain scan and to ``du``, and the ioctls.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import generate  # noqa: E402  (benchmarks/ is not a package)

from exporter.discover.roots import discover_root  # noqa: E402
from exporter.model import ScanOptions  # noqa: E402
from exporter.snapshot.full import full_scan  # noqa: E402
from tests.reflinkfs import UnavailableError, loop_filesystem  # noqa: E402

FICLONE = 0x40049409
OPTIONS = ScanOptions(workers=2, cross_filesystems=False, top_packages=0, stale_after=90 * 86400)


def scan_seconds(root: Path, mapped: bool) -> tuple[float, int]:
    """One in-process full scan of ``root``: seconds, and the root's bytes."""
    # without the maps: the walk is told the filesystem cannot reflink (forked workers inherit the patch)
    with contextlib.nullcontext() if mapped else mock.patch("exporter.scan.walk.can_reflink", return_value=False):
        started = time.perf_counter()
        snapshot = full_scan([discover_root(str(root), environ={}, home=str(root.parent))], OPTIONS)
        return time.perf_counter() - started, snapshot.roots[0].bytes


def du_seconds(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["du", "-s", str(root)], check=True, capture_output=True)
    return time.perf_counter() - started


def fiemap_calls(root: Path) -> int | None:
    """FS_IOC_FIEMAP ioctls of one ``--once`` process tree, by strace; None without strace."""
    if shutil.which("strace") is None:
        return None
    exporter_cmd = Path(sys.executable).parent / "conda-env-exporter"
    with tempfile.NamedTemporaryFile(prefix="strace-") as out:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=ioctl", "-o", out.name, str(exporter_cmd), "--once",
                        "--root", str(root)], check=True, capture_output=True, env={**os.environ, "HOME": str(root)})
        return len(re.findall(r"FS_IOC_FIEMAP", Path(out.name).read_text(errors="replace")))


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(root: Path, repeats: int) -> dict[str, Any]:
    scan_seconds(root, True)  # warm the page cache and the interpreter
    scan_seconds(root, False)
    du_seconds(root)
    mapped, plain, du = [], [], []
    bytes_mapped = bytes_plain = 0
    for _ in range(repeats):
        seconds, bytes_mapped = scan_seconds(root, True)
        mapped.append(seconds)
        seconds, bytes_plain = scan_seconds(root, False)
        plain.append(seconds)
        du.append(du_seconds(root))
    result: dict[str, Any] = {
        "mapped_seconds": summary(mapped), "plain_seconds": summary(plain), "du_seconds": summary(du),
        "root_bytes_mapped": bytes_mapped, "root_bytes_plain": bytes_plain,
        "du_B1_bytes": int(subprocess.run(["du", "-s", "-B1", str(root)], check=True, capture_output=True,
                                          text=True).stdout.split()[0]),
        "fiemap_ioctls": fiemap_calls(root),
    }
    result["mapped_over_plain"] = result["mapped_seconds"]["median"] / result["plain_seconds"]["median"]
    result["mapped_over_du"] = result["mapped_seconds"]["median"] / result["du_seconds"]["median"]
    return result


def reflink_envs(root: Path) -> int:
    """Replace every hardlinked regular file under ``root/envs`` by a reflink of itself (a new inode sharing
    its extents, as an installer that reflinks from the cache leaves it). Returns how many."""
    count = 0
    for path in (root / "envs").rglob("*"):
        st = path.lstat()
        if not path.is_file() or path.is_symlink() or st.st_nlink < 2:
            continue
        fresh = path.with_name(f".{path.name}.reflink")
        with open(path, "rb") as source, open(fresh, "wb") as target:
            fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
        os.replace(fresh, path)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(generate.PROFILES), default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fs-mib", type=int, default=3072, help="size of the XFS loop file (sparse)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reflink-bench-") as work:
        try:
            with loop_filesystem("xfs", Path(work), args.fs_mib) as mountpoint:
                root = mountpoint / "tree"
                made = generate.generate(args.size, root, quiet=True)
                subprocess.run(["sync", "-f", str(root)], check=True)
                results: dict[str, Any] = {"size": args.size, "paths": made.get("paths"), "repeats": args.repeats}
                results["hardlinked"] = measure(root, args.repeats)
                results["reflinked_files"] = reflink_envs(root)
                subprocess.run(["sync", "-f", str(root)], check=True)
                results["reflinked"] = measure(root, args.repeats)
        except UnavailableError as why:
            print(f"reflink.py: cannot make an XFS filesystem here: {why}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"tree {args.size}: {results['paths']} paths; {results['reflinked_files']} env files reflinked in step 4")
    for shape in ("hardlinked", "reflinked"):
        r = results[shape]
        print(f"{shape:>10}: scan with extent maps {r['mapped_seconds']['median']:.3f} s, without "
              f"{r['plain_seconds']['median']:.3f} s ({r['mapped_over_plain']:.2f}x), du -s "
              f"{r['du_seconds']['median']:.3f} s ({r['mapped_over_du']:.2f}x); FIEMAP ioctls {r['fiemap_ioctls']}; "
              f"root bytes {r['root_bytes_mapped']} mapped, {r['root_bytes_plain']} plain, du -B1 {r['du_B1_bytes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
