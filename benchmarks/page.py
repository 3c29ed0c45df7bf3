"""Page benchmark: render time and bytes of ``/`` for the 100-env tree, against the /metrics exposition.

    .venv/bin/python benchmarks/page.py [--size wide] [--repeats 50] [--json]

Generates the tree if needed (``benchmarks/generate.py``; ``wide``: the base env and 99 envs over a
700-project cache), scans it once in this process, then times, ``--repeats`` times each and alternately:

- the page's render (:func:`exporter.expose.page.render_page` and its UTF-8 encoding: what
  :class:`~exporter.expose.page.PageCache` does once per change of the store), median / p95 / max in ms
  (target: median <= 20 ms);
- its gzip (the cached body deflated once per change, as served to a client that asks for it);
- the /metrics exposition's render of the same snapshot (what ExpositionCache does per change), as the
  same-run yardstick: the ratio page / exposition does not depend on the machine's speed;

and reports the page's size, plain and gzipped (target: plain <= 150 KB), and bytes per env.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import generate
from prometheus_client import generate_latest

from exporter.discover.roots import discover_root
from exporter.expose.exposition import Body, build_registry
from exporter.expose.page import render_page
from exporter.model import ScanOptions
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore

HERE = Path(__file__).resolve().parent
TARGET_RENDER_MS = 20.0
TARGET_PAGE_BYTES = 150_000


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def measure(tree: Path, repeats: int) -> dict[str, Any]:
    store = SnapshotStore()
    options = ScanOptions(workers=2, cross_filesystems=False, top_packages=0, stale_after=90 * 86400)
    started = time.perf_counter()
    store.publish(full_scan([discover_root(str(tree.resolve()))], options), "startup")
    scan_seconds = time.perf_counter() - started
    snapshot = store.snapshot
    assert snapshot is not None
    registry = build_registry(store)
    page_times, gzip_times, exposition_times = [], [], []
    page = b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        page = render_page(snapshot, store.health(), "/metrics", "benchmark-host").encode("utf-8", "backslashreplace")
        t1 = time.perf_counter()
        compressed = Body(0, page).gzip()
        t2 = time.perf_counter()
        text = generate_latest(registry)  # what ExpositionCache renders after a change
        t3 = time.perf_counter()
        page_times.append(t1 - t0)
        gzip_times.append(t2 - t1)
        exposition_times.append(t3 - t2)
    page_ms, exposition_ms = _ms(page_times), _ms(exposition_times)
    return {
        "tree": str(tree),
        "envs": len(snapshot.envs),
        "package_caches": len(snapshot.pkgs),
        "scan_seconds": round(scan_seconds, 2),
        "repeats": repeats,
        "page_render": page_ms,
        "page_gzip": _ms(gzip_times),
        "exposition_render": exposition_ms,
        "ratio_page_to_exposition": round(page_ms["median_ms"] / exposition_ms["median_ms"], 3),
        "page_bytes": len(page),
        "page_gzip_bytes": len(compressed),
        "page_bytes_per_env": round(len(page) / max(len(snapshot.envs), 1)),
        "exposition_bytes": len(text),
        "targets": {
            "render_median_ms_le_20": page_ms["median_ms"] <= TARGET_RENDER_MS,
            "page_bytes_le_150000": len(page) <= TARGET_PAGE_BYTES,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(generate.PROFILES), default="wide")
    parser.add_argument("--tree", type=Path, help="tree to use (default benchmarks/trees/<size>, generated there)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    tree = args.tree or HERE / "trees" / args.size
    generate.generate(args.size, tree)  # reused when already generated
    result = measure(tree, args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    render, gz, expo = result["page_render"], result["page_gzip"], result["exposition_render"]
    print(f"tree {tree}: {result['envs']} envs, {result['package_caches']} package cache(s), "
          f"scanned in {result['scan_seconds']} s; {args.repeats} repeats")
    verdict = "ok" if result["targets"]["render_median_ms_le_20"] else "MISSED"
    print(f"page render      median {render['median_ms']} ms  p95 {render['p95_ms']} ms  max {render['max_ms']} ms"
          f"  (target median <= {TARGET_RENDER_MS:g} ms: {verdict})")
    print(f"page gzip        median {gz['median_ms']} ms  p95 {gz['p95_ms']} ms")
    print(f"/metrics render  median {expo['median_ms']} ms  p95 {expo['p95_ms']} ms"
          f"  (page / exposition: {result['ratio_page_to_exposition']})")
    print(f"page bytes       {result['page_bytes']} plain ({result['page_bytes_per_env']} per env), "
          f"{result['page_gzip_bytes']} gzip  (target plain <= {TARGET_PAGE_BYTES}: "
          f"{'ok' if result['targets']['page_bytes_le_150000'] else 'MISSED'}); "
          f"/metrics {result['exposition_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
