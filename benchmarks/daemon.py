"""Daemon benchmark: how fast and how cheaply a change shows on /metrics, idle cost, scrape latency.

    .venv/bin/python benchmarks/daemon.py --size large [--idle-seconds 60]

On a generated tree (benchmarks/generate.py) it starts ``conda-env-exporter`` as a daemon and measures,
in the same run:

1. the CPU seconds of a full scan (``--once``, all processes), the baseline;
2. one package installed into one env the way conda does it (hardlinks from the cache, then the
   ``conda-meta`` record written atomically): seconds until /metrics shows it, and the daemon's CPU
   seconds meanwhile, as a ratio of the baseline (target <= 5%);
3. idle CPU over ``--idle-seconds`` with nothing changing (target <= 1% of one core);
4. /metrics latency under 20 concurrent scrapers, p50/p99, while idle and while a reconcile full scan
   runs (SIGHUP starts one) (target p99 <= 20 ms).
CPU comes from /proc/PID/stat (utime + stime of the daemon, plus its reaped workers' cutime + cstime).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (its own and its reaped children's CPU)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def wait_for(check: object, deadline: float, what: str) -> float:
    """Poll ``check()`` every 5 ms until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        try:
            if check():  # type: ignore[operator]
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"timed out after {deadline} s waiting for {what}")


def env_files(port: int, prefix: str) -> float | None:
    for line in get(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith("conda_env_files{") and f'prefix="{prefix}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def install_one_package(root: Path) -> tuple[Path, list[Path]]:
    """Hardlink a cache package one env lacks into it, then write its record atomically: (env, paths
    written, record last)."""
    envs = sorted(p for p in (root / "envs").iterdir() if (p / "conda-meta").is_dir())
    packages = sorted(p for p in (root / "pkgs").iterdir() if (p / "info" / "index.json").is_file())
    for env in envs:
        have = {p.name.removesuffix(".json") for p in (env / "conda-meta").glob("*.json")}
        for package in packages:
            if package.name in have:
                continue
            files = [Path(d, f).relative_to(package) for d, _, fs in os.walk(package) for f in fs]
            files = [f for f in files if f.parts[0] != "info"]
            if not files or any((env / f).exists() for f in files):
                continue
            for rel in files:
                (env / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(package / rel, env / rel)
            name, version, build = package.name.rsplit("-", 2)
            record = {"name": name, "version": version, "build": build, "files": [str(f) for f in files],
                      "link": {"source": str(package), "type": 1}}
            tmp = env / "conda-meta" / f".{package.name}.json.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, env / "conda-meta" / f"{package.name}.json")
            return env, [env / f for f in files] + [env / "conda-meta" / f"{package.name}.json"]
    raise SystemExit("no package to install: every env has every package")


def scrape_latencies(port: int, seconds: float, scrapers: int = 20) -> list[float]:
    stop = time.monotonic() + seconds
    out: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            get(f"http://127.0.0.1:{port}/metrics")
            with lock:
                out.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "medium", "large"), default="large")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--scrape-seconds", type=float, default=5.0)
    args = parser.parse_args()
    tree = HERE / "trees" / args.size
    subprocess.run([sys.executable, str(HERE / "generate.py"), "--size", args.size, "--out", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    work = tree  # changed in place for the measurement, and restored after it

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([EXPORTER, "--once", "--root", str(work)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    full_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    port = free_port()
    proc = subprocess.Popen([EXPORTER, "--root", str(work), "--web.listen-address", f"127.0.0.1:{port}",
                             "--watch.debounce", "1", "--scan.interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz").startswith("ready"), 600, "/readyz")
        envs = get(f"http://127.0.0.1:{port}/metrics").count("conda_env_files{")
        cpu0 = cpu_seconds(proc.pid)
        env, written = install_one_package(work)
        added = len(written) - 1
        was = env_files(port, str(env)) or 0.0
        changed_at = time.monotonic()
        latency = wait_for(lambda: (env_files(port, str(env)) or 0) >= was + added, 120, "the change on /metrics")
        time.sleep(max(0.0, 2.0 - (time.monotonic() - changed_at)))  # let the rescan's tail finish
        change_cpu = cpu_seconds(proc.pid) - cpu0

        idle0 = cpu_seconds(proc.pid)
        time.sleep(args.idle_seconds)
        idle_share = (cpu_seconds(proc.pid) - idle0) / args.idle_seconds

        idle_lat = scrape_latencies(port, args.scrape_seconds)
        proc.send_signal(signal.SIGHUP)  # a reconcile full scan starts now
        busy_lat = scrape_latencies(port, args.scrape_seconds)
    finally:
        proc.terminate()
        proc.wait(10)
        for path in locals().get("written", []):
            path.unlink(missing_ok=True)

    print(f"tree: {work} ({args.size}), {envs} envs; debounce 1 s")
    print(f"full scan (--once) CPU:                {full_cpu:.2f} s")
    print(f"one package ({added} files) into {env.name}: on /metrics after {latency:.2f} s "
          f"(target <= debounce + 1 s = 2 s); CPU {change_cpu:.3f} s = {100 * change_cpu / full_cpu:.1f}% "
          "of a full scan (target <= 5%)")
    print(f"idle CPU over {args.idle_seconds:.0f} s:          {100 * idle_share:.2f}% of one core (target <= 1%)")
    for label, lat in (("idle", idle_lat), ("during a reconcile", busy_lat)):
        print(f"/metrics, 20 scrapers, {label}: {len(lat)} requests, p50 {1000 * pct(lat, 50):.1f} ms, "
              f"p99 {1000 * pct(lat, 99):.1f} ms (target <= 20 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
