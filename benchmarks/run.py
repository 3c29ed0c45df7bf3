"""Speed and memory benchmark: ``conda-env-exporter --once`` against GNU ``du -s`` on the same generated tree.

``python benchmarks/run.py --size medium [--repeats 5] [--json]`` generates the tree if needed
(``benchmarks/generate.py``), warms the page cache (one untimed run of each command), then runs the two
commands alternately, ``--repeats`` times each, our stdout to a temporary file, and reports:

- median / min / max wall time of each, in seconds, and the ratio of the medians (ours / du; target ≤ 1.0);
  also the scan alone (``conda_exporter_last_scan_duration_seconds`` of each timed run) against ``du``;
- peak RSS, in bytes: of the whole exporter process tree in the timed runs (``wait4``: max over the main
  process and its reaped workers), and, from one extra probed run, of the main process and of its largest
  worker separately (``getrusage`` SELF / CHILDREN at exit);
- the interpreter baseline: peak RSS of ``python -c 'import exporter.cli'`` in the same run, and the peaks
  above it per path of the tree (target ≤ 100 bytes/path);
- a check that the exporter's ``conda_root_bytes`` equals ``du -s -B1`` of the tree.

Exit status: 0 when everything ran, 1 when the exporter failed (its error is printed), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import generate

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * 1024
# Runs the real entry point and, at exit, writes the main process's own peak RSS and its reaped children's
# largest peak (both KiB) to the file named by BENCH_RSS_FILE. Forked workers leave through os._exit, so only
# the main process reports.
PROBE = """\
import atexit, os, resource, sys
_pid = os.getpid()
def _report():
    if os.getpid() == _pid:
        with open(os.environ["BENCH_RSS_FILE"], "w") as f:
            f.write("%d %d" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
atexit.register(_report)
sys.argv[0] = "conda-env-exporter"
from exporter.cli import main
sys.exit(main())
"""


@dataclass
class Run:
    """One finished command: wall time in seconds, peak RSS in bytes (max over it and its reaped children)."""

    seconds: float
    maxrss_bytes: int
    exit_code: int
    stderr: str


def run_once(argv: list[str], env: dict[str, str], stdout: str = os.devnull) -> Run:
    """Run ``argv`` (argv[0] an absolute path) with stdout to the file ``stdout``, wait for it with ``wait4``."""
    with tempfile.NamedTemporaryFile(prefix="bench-stderr-") as err:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                   (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - start
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Run(seconds, usage.ru_maxrss * KIB, os.waitstatus_to_exitcode(status), text)


def tail(text: str, lines: int = 8) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def stats(runs: list[Run]) -> dict[str, float]:
    """Median, min and max wall time in seconds of ``runs``."""
    times = [r.seconds for r in runs]
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def root_bytes_of(exposition: str, root: str) -> int | None:
    """The ``conda_root_bytes`` sample of ``root`` in a Prometheus text exposition, in bytes."""
    for m in re.finditer(r'^conda_root_bytes\{([^}]*)\} (\S+)$', exposition, re.MULTILINE):
        if f'root="{root}"' in m.group(1):
            return int(float(m.group(2)))
    return None


def scan_seconds_of(exposition: str) -> float | None:
    """``conda_exporter_last_scan_duration_seconds``: the scan's own wall time, in seconds."""
    found = re.search(r"^conda_exporter_last_scan_duration_seconds (\S+)$", exposition, re.MULTILINE)
    return float(found.group(1)) if found else None


def benchmark(tree: Path, paths: int, repeats: int, extra_args: list[str]) -> tuple[dict[str, Any], str | None]:
    """Measure; returns the results (seconds, bytes) and an error message when the exporter failed."""
    exporter = Path(sys.executable).parent / "conda-env-exporter"
    du = shutil.which("du")
    if du is None:
        raise SystemExit("run.py: du not found on PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDA_EXPORTER_")}
    ours = [str(exporter), "--once", "--root", str(tree), *extra_args]
    theirs = [du, "-s", str(tree)]
    result: dict[str, Any] = {"tree": str(tree), "paths": paths, "repeats": repeats, "exporter": ours,
                              "du": theirs, "python": sys.version.split()[0], "cpus": os.cpu_count()}
    error = None
    # warm-up (untimed): fills the page cache, and checks the exporter works and agrees with du -B1
    du_b1 = run_out([du, "-s", "-B1", str(tree)], env)
    result["du_B1_bytes"] = int(du_b1.split()[0])
    if not exporter.exists():
        error = f"{exporter} does not exist: install the project into this venv (pip install -e .)"
    else:
        with tempfile.NamedTemporaryFile(prefix="bench-exposition-") as out:
            warm = run_once(ours, env, out.name)
            exposition = Path(out.name).read_text(errors="replace")
        if warm.exit_code != 0:
            error = f"`{shlex.join(ours)}` failed with exit code {warm.exit_code}:\n{tail(warm.stderr)}"
        else:
            result["conda_root_bytes"] = root_bytes_of(exposition, str(tree))
            result["root_bytes_match_du"] = result["conda_root_bytes"] == result["du_B1_bytes"]
    ours_runs: list[Run] = []
    du_runs: list[Run] = []
    scan_seconds: list[float] = []
    for _ in range(repeats):
        if error is None:
            with tempfile.NamedTemporaryFile(prefix="bench-exposition-") as out:
                ours_runs.append(run_once(ours, env, out.name))
                scan = scan_seconds_of(Path(out.name).read_text(errors="replace"))
            if ours_runs[-1].exit_code != 0:
                error = f"`{shlex.join(ours)}` failed in a timed run:\n{tail(ours_runs[-1].stderr)}"
            elif scan is not None:
                scan_seconds.append(scan)
        du_runs.append(run_once(theirs, env))
    result["du_seconds"] = stats(du_runs)
    if error is not None:
        result["error"] = error
        return result, error
    result["ours_seconds"] = stats(ours_runs)
    result["ratio"] = result["ours_seconds"]["median"] / result["du_seconds"]["median"]
    if scan_seconds:  # the scan alone, without interpreter start-up, imports and output
        result["scan_seconds"] = {"median": statistics.median(scan_seconds), "min": min(scan_seconds),
                                  "max": max(scan_seconds)}
        result["scan_ratio"] = result["scan_seconds"]["median"] / result["du_seconds"]["median"]
    result["ours_tree_peak_rss_bytes"] = max(r.maxrss_bytes for r in ours_runs)
    baselines = [run_once([sys.executable, "-c", "import exporter.cli"], env) for _ in range(3)]
    baseline_rss = max(b.maxrss_bytes for b in baselines)
    result["baseline_rss_bytes"] = baseline_rss
    result["baseline_seconds"] = statistics.median(b.seconds for b in baselines)
    result["du_peak_rss_bytes"] = max(r.maxrss_bytes for r in du_runs)
    with tempfile.NamedTemporaryFile(prefix="bench-rss-") as rss:
        probe = run_once([sys.executable, "-c", PROBE, "--once", "--root", str(tree), *extra_args],
                         env | {"BENCH_RSS_FILE": rss.name})
        fields = Path(rss.name).read_text().split()
    if probe.exit_code == 0 and len(fields) == 2:
        result["main_peak_rss_bytes"] = int(fields[0]) * KIB
        result["worker_peak_rss_bytes"] = int(fields[1]) * KIB
    for key in ("ours_tree", "main", "worker"):
        if f"{key}_peak_rss_bytes" in result:
            above = result[f"{key}_peak_rss_bytes"] - baseline_rss
            result[f"{key}_bytes_per_path"] = above / paths if paths else None
    return result, None


def run_out(argv: list[str], env: dict[str, str]) -> str:
    """Stdout of ``argv`` (which must succeed)."""
    with tempfile.NamedTemporaryFile(prefix="bench-out-") as out:
        done = run_once(argv, env, out.name)
        if done.exit_code != 0:
            raise SystemExit(f"run.py: `{shlex.join(argv)}` failed:\n{tail(done.stderr)}")
        return Path(out.name).read_text()


def render(r: dict[str, Any], size: str) -> str:
    """The human-readable report of ``benchmark``'s results."""
    def line(label: str, s: dict[str, float]) -> str:
        return f"  {label:<28} {s['median']:8.3f} s {s['min']:8.3f} s {s['max']:8.3f} s"

    out = [f"tree: {r['tree']} ({size}, {r['paths']:,} paths)",
           f"runs: {r['repeats']} of each, alternating, warm page cache; {r['cpus']} CPUs, Python {r['python']}",
           f"  {'wall time':<28} {'median':>10} {'min':>10} {'max':>10}"]
    if "ours_seconds" in r:
        out.append(line("conda-env-exporter --once", r["ours_seconds"]))
    out.append(line("du -s", r["du_seconds"]))
    if "error" in r:
        return "\n".join([*out, f"ERROR: {r['error']}"])
    out.append(f"ratio ours/du (medians): {r['ratio']:.2f}   (target <= 1.0)")
    if "scan_seconds" in r:
        out.append(line("  of which the scan itself", r["scan_seconds"]))
        out.append(f"ratio scan/du (medians): {r['scan_ratio']:.2f}   (the rest is interpreter start-up, "
                   "imports and output)")

    def mem(key: str, label: str) -> None:
        if f"{key}_peak_rss_bytes" in r:
            per_path = r.get(f"{key}_bytes_per_path")
            above = "" if per_path is None else "  (below baseline)" if per_path < 0 else f"  {per_path:7.1f} B/path"
            out.append(f"  {label:<40} {r[f'{key}_peak_rss_bytes'] / MIB:8.1f} MiB{above}")

    out.append("peak RSS, and above the baseline per path (target <= 100 B/path):")
    mem("ours_tree", "whole process tree (timed runs, wait4)")
    mem("main", "main process (probed run)")
    mem("worker", "largest worker (probed run)")
    out.append(f"  {'baseline: python -c import exporter.cli':<40} {r['baseline_rss_bytes'] / MIB:8.1f} MiB"
               f"  (its wall time: {r['baseline_seconds']:.3f} s)")
    mem("du", "du -s")
    verdict = "OK" if r.get("root_bytes_match_du") else "MISMATCH"
    out.append(f"check: conda_root_bytes {r.get('conda_root_bytes')} vs du -s -B1 {r['du_B1_bytes']}: {verdict}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(generate.PROFILES), default="medium")
    parser.add_argument("--tree", type=Path, help="tree to use (default benchmarks/trees/<size>); generated there "
                        "unless it is a non-empty dir not made by generate.py (e.g. a real conda root): used as is")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command (at least 5)")
    parser.add_argument("--exporter-args", default="", help="extra arguments for the exporter, e.g. '--scan.workers 1'")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5 (the figures are medians of >= 5 runs)")
    tree = (args.tree or HERE / "trees" / args.size).resolve()
    marker: dict[str, Any]
    if args.tree is not None and tree.is_dir() and any(tree.iterdir()) and generate.read_marker(tree) is None:
        marker = dict(generate.count_tree(tree))  # a tree not made by the generator (e.g. a real root): count it
    else:
        marker = generate.generate(args.size, tree)  # reused when already generated
    result, error = benchmark(tree, int(marker["paths"]), args.repeats, shlex.split(args.exporter_args))
    result["size"] = marker.get("size", "custom")
    result["tree_counts"] = {k: marker.get(k) for k in ("paths", "dirs", "files", "symlinks", "envs")}
    print(json.dumps(result, indent=1) if args.json else render(result, result["size"]))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
