"""How a full scan's cost grows with the tree: ``run.py`` on several sizes, one table and one plot.

``python benchmarks/scaling.py [--sizes small,medium,large,huge] [--repeats 5]`` runs
``benchmarks/run.py --size S --json`` for each size (generating the trees that are missing), keeps each
result in ``benchmarks/results/scaling-<size>.json``, and writes

- ``benchmarks/results/scaling.md``: a Markdown table (paths, ``du -s``, the ``--once`` process and the
  scan alone, their ratios to ``du``, wall time per path in µs, peak RSS above the interpreter's own in
  bytes per path);
- ``benchmarks/scaling.png``: wall time per path (µs) and peak RSS per path (bytes) against the path count
  (log scale), so a reader sees whether they stay flat as the tree grows.

``--from-results`` skips the runs and redraws from the JSON files already there (e.g. after adding one size).
The plot needs matplotlib (the ``bench`` extra: ``pip install -e '.[bench]'``); the table does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PLOT = HERE / "scaling.png"
MIB = 1 << 20


def measure(size: str, repeats: int) -> dict[str, Any]:
    """``run.py``'s JSON result for ``size`` (seconds, bytes), also saved under ``benchmarks/results/``."""
    done = subprocess.run([sys.executable, str(HERE / "run.py"), "--size", size, "--json", "--repeats", str(repeats)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scaling: run.py --size {size} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scaling-{size}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def row(r: dict[str, Any]) -> dict[str, float]:
    """The per-size figures: seconds, ratios, µs per path, bytes per path above the interpreter's own."""
    paths = r["paths"]
    ours, du = r["ours_seconds"]["median"], r["du_seconds"]["median"]
    scan = r.get("scan_seconds", {}).get("median", float("nan"))
    return {"paths": paths, "du": du, "ours": ours, "scan": scan, "ratio": ours / du, "scan_ratio": scan / du,
            "us_per_path_ours": ours / paths * 1e6, "us_per_path_scan": scan / paths * 1e6,
            "us_per_path_du": du / paths * 1e6, "rss_mib": r["ours_tree_peak_rss_bytes"] / MIB,
            "b_per_path": r.get("ours_tree_bytes_per_path") or float("nan"),
            "main_b_per_path": r.get("main_bytes_per_path") or float("nan")}


def table(results: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of every size's figures, smallest tree first."""
    lines = ["| size | paths | `du -s` | `--once` process | ratio | scan alone | ratio | µs/path (process / scan / du)"
             " | peak RSS | above baseline, B/path (tree / main) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in sorted(results.items(), key=lambda kv: kv[1]["paths"]):
        f = row(r)
        lines.append(
            f"| {size} | {f['paths']:,} | {f['du']:.2f} s | {f['ours']:.2f} s | {f['ratio']:.2f} | {f['scan']:.2f} s"
            f" | {f['scan_ratio']:.2f} | {f['us_per_path_ours']:.2f} / {f['us_per_path_scan']:.2f} /"
            f" {f['us_per_path_du']:.2f} | {f['rss_mib']:.0f} MiB | {f['b_per_path']:.1f} /"
            f" {f['main_b_per_path']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    """Two panels against the path count: wall µs per path, and peak RSS bytes per path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt

    rows = sorted((row(r) | {"size": s} for s, r in results.items()), key=lambda f: f["paths"])
    xs = [f["paths"] for f in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for key, label in (("us_per_path_ours", "--once process"), ("us_per_path_scan", "scan alone"),
                       ("us_per_path_du", "du -s")):
        left.plot(xs, [f[key] for f in rows], marker="o", label=label)
    left.set(xscale="log", xlabel="paths in the tree", ylabel="wall time per path (µs)", ylim=(0, None),
             title="Full scan: time per path")
    for key, label in (("b_per_path", "process tree"), ("main_b_per_path", "main process")):
        right.plot(xs, [f[key] for f in rows], marker="o", label=label)
    right.axhline(64, color="grey", linestyle="--", linewidth=1, label="target 64 B/path")
    right.set(xscale="log", xlabel="paths in the tree", ylabel="peak RSS above baseline per path (bytes)",
              ylim=(0, None), title="Full scan: memory per path")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
        for f in rows:
            ax.annotate(str(f["size"]), (f["paths"], 0), textcoords="offset points", xytext=(0, 4), ha="center",
                        fontsize=8, color="grey")
    fig.tight_layout()
    fig.savefig(out)


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large,huge", help="comma-separated generate.py sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--from-results", action="store_true", help="redraw from benchmarks/results/ only")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for size in args.sizes.split(","):
        saved = RESULTS / f"scaling-{size}.json"
        if args.from_results:
            results[size] = json.loads(saved.read_text())
        else:
            print(f"scaling: measuring {size} ...", file=sys.stderr, flush=True)
            results[size] = measure(size, args.repeats)
    text = table(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.md").write_text(text)
    print(text, end="")
    try:
        plot(results, PLOT)
    except ImportError:
        print("scaling: matplotlib missing (pip install -e '.[bench]'): table only", file=sys.stderr)
        return 0
    print(f"plot: {PLOT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
