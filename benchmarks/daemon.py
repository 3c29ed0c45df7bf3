"""Daemon benchmark: how fast and how cheaply a change shows on /metrics, idle cost, scrape latency.

    .venv/bin/python benchmarks/daemon.py --size large [--idle-seconds 60]

On a generated tree (benchmarks/generate.py) it starts ``conda-env-exporter`` as a daemon and measures,
in the same run:

1. the CPU seconds of a full scan: a ``--once`` process, and the daemon's own reconcile scan; the
   smaller of the two is the baseline of the ratio below;
2. one package installed into one env the way conda does it (hardlinks from the cache, then the
   ``conda-meta`` record written atomically): seconds until /metrics shows it, polling every 5 ms;
3. the daemon's CPU seconds for a change: the package removed, then installed again, each timed from
   the change until the daemon logs its rescan and one scrape renders the result, plus a quiet
   debounce after it. No polling meanwhile: serving 200 polls of a 100 KB /metrics would be counted
   as the change's cost (target <= 5% of a full scan);
4. idle CPU over ``--idle-seconds`` with nothing changing (target <= 1% of one core);
5. /metrics latency under 20 concurrent scrapers, p50/p99, while idle and while a reconcile full scan
   runs (SIGHUP starts one, and another as each ends, so the whole measurement overlaps scans)
   (target p99 <= 20 ms): with Python http.client clients (threads of this process, which take CPU from
   the daemon on a 2-core machine), and with ``wrk -c 20`` where Debian's wrk is installed (a C
   client that leaves the CPU to the server, as Prometheus would), plain and asking for gzip as
   Prometheus does).
CPU comes from /proc/PID/stat of the daemon and all its descendants (see cpu_seconds).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import generate

HERE = Path(__file__).resolve().parent
EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))
TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every process below it: utime + stime of each live one, plus the
    cutime + cstime of reaped children. Scan workers may be children of a forkserver process, not of
    the daemon itself, so the daemon's own cutime alone would miss them."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for member in tree:
        try:
            total += sum(int(f) for f in _stat_fields(member)[11:15])
        except (OSError, IndexError, ValueError):
            continue  # exited between the listing and the read: its parent's cutime has it
    return total / TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now, in bytes (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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


def scrape_latencies(port: int, seconds: float, scrapers: int = 20) -> tuple[list[float], float]:
    """Latencies of GET /metrics by ``scrapers`` Python threads (http.client, a connection per scrape,
    the body read whole) for ``seconds``, and the CPU seconds this process spent on them: on two
    cores that client CPU is taken from the server, and is shown next to the figures."""
    stop = time.monotonic() + seconds
    out: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200, response.status
            with lock:
                out.append(time.perf_counter() - started)

    before = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=worker) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wrk_latencies(port: int, seconds: float, scrapers: int = 20, gzip: bool = False) -> tuple[int, float, float] | None:
    """(requests, p50, p99 in seconds) from ``wrk -c scrapers``, or None without wrk; with ``gzip``
    the requests ask for gzip, as Prometheus's do."""
    wrk = shutil.which("wrk")
    if not wrk:
        return None
    header = ["-H", "Accept-Encoding: gzip"] if gzip else []
    out = subprocess.run(
        [wrk, "-c", str(scrapers), "-t", "2", "-d", f"{seconds:.0f}s", "--latency", *header,
         f"http://127.0.0.1:{port}/metrics"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}

    def quantile(q: str) -> float:
        found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        assert found, out
        return float(found[1]) * units[found[2]]

    requests = re.search(r"(\d+) requests in", out)
    assert requests, out
    return int(requests[1]), quantile("50"), quantile("99")


class LogLines:
    """The daemon's stderr, line by line, so the benchmark can wait for what the daemon says it did."""

    def __init__(self, stream: object) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line)

    def drain(self) -> None:
        while not self._lines.empty():
            self._lines.get_nowait()

    def wait_for(self, needle: str, deadline: float) -> str:
        end = time.monotonic() + deadline
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if needle in line:
                return line
        raise SystemExit(f"timed out after {deadline} s waiting for a log line with {needle!r}")


class ReconcileLoad:
    """Keeps a reconcile full scan running for the whole ``with`` block: SIGHUP starts one, and
    another each time the daemon logs that one ended; on exit, waits for the last to end. A window
    shorter than one scan would otherwise be measured partly idle."""

    def __init__(self, proc: subprocess.Popen[str], log: LogLines) -> None:
        self.proc, self.log = proc, log
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.proc.send_signal(signal.SIGHUP)
            self.log.wait_for("scan of", 600)
            self.scans += 1
            if self._stop.is_set():
                return

    def __enter__(self) -> ReconcileLoad:
        self.log.drain()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(600)


def remove_package(env: Path, written: list[Path]) -> None:
    """Undo install_one_package the way conda removes: the record first, then the files."""
    written[-1].unlink()
    for path in written[:-1]:
        path.unlink()


def reinstall(env: Path, written: list[Path], package: Path) -> None:
    """Link the same files again from the cache entry, then write the record atomically."""
    for path in written[:-1]:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(package / path.relative_to(env), path)
    tmp = written[-1].with_name(f".{written[-1].name}.tmp")
    tmp.write_text(RECORDS[written[-1]])
    os.replace(tmp, written[-1])


RECORDS: dict[Path, str] = {}


def change_cpu(proc: subprocess.Popen[str], log: LogLines, port: int, change: object) -> float:
    """Daemon CPU seconds from ``change()`` until its rescan is logged and rendered, then quiet."""
    log.drain()
    cpu0 = cpu_seconds(proc.pid)
    change()  # type: ignore[operator]
    log.wait_for("rescanned", 60)
    get(f"http://127.0.0.1:{port}/metrics")  # the first scrape after a change renders it
    time.sleep(1.5)  # a debounce and a half: any straggling event's rescan is counted too
    return cpu_seconds(proc.pid) - cpu0


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(generate.PROFILES), default="large")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--scrape-seconds", type=float, default=5.0)
    args = parser.parse_args()
    tree = HERE / "trees" / args.size
    subprocess.run([sys.executable, str(HERE / "generate.py"), "--size", args.size, "--out", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    work = tree.resolve()  # changed in place for the measurement, and restored after it; resolved, as the
    # exporter labels envs by real path (a symlinked tree dir would never match)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([EXPORTER, "--once", "--root", str(work)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    full_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    port = free_port()
    proc = subprocess.Popen([EXPORTER, "--root", str(work), "--web.listen-address", f"127.0.0.1:{port}",
                             "--watch.debounce", "1", "--scan.interval", "0", "--log.level", "info"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    log = LogLines(proc.stderr)
    written: list[Path] = []
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz").startswith("ready"), 600, "/readyz")
        envs = get(f"http://127.0.0.1:{port}/metrics").count("conda_env_files{")
        env, written = install_one_package(work)
        RECORDS[written[-1]] = written[-1].read_text()
        package = Path(json.loads(RECORDS[written[-1]])["link"]["source"])
        added = len(written) - 1
        was = env_files(port, str(env)) or 0.0
        latency = wait_for(lambda: (env_files(port, str(env)) or 0) >= was + added, 120, "the change on /metrics")
        time.sleep(2.0)  # let the rescan's tail finish before measuring CPU

        remove_cpu = change_cpu(proc, log, port, lambda: remove_package(env, written))
        install_cpu = change_cpu(proc, log, port, lambda: reinstall(env, written, package))

        log.drain()
        cpu0 = cpu_seconds(proc.pid)
        proc.send_signal(signal.SIGHUP)  # a reconcile full scan, nothing else going on
        log.wait_for("scan of", 600)
        daemon_full_cpu = cpu_seconds(proc.pid) - cpu0

        idle0 = cpu_seconds(proc.pid)
        time.sleep(args.idle_seconds)
        idle_share = (cpu_seconds(proc.pid) - idle0) / args.idle_seconds
        steady_rss = rss_bytes(proc.pid)  # the daemon's own, after scans, changes and a quiet period

        idle_lat = scrape_latencies(port, args.scrape_seconds)
        idle_wrk = wrk_latencies(port, args.scrape_seconds)
        idle_gzip = wrk_latencies(port, args.scrape_seconds, gzip=True)
        with ReconcileLoad(proc, log) as load:
            busy_lat = scrape_latencies(port, args.scrape_seconds)
            busy_wrk = wrk_latencies(port, args.scrape_seconds)
            busy_gzip = wrk_latencies(port, args.scrape_seconds, gzip=True)
        scans = load.scans
    finally:
        proc.terminate()
        proc.wait(10)
        for path in written:
            path.unlink(missing_ok=True)

    worst = max(remove_cpu, install_cpu)
    baseline = min(full_cpu, daemon_full_cpu)
    print(f"tree: {work} ({args.size}), {envs} envs; debounce 1 s")
    print(f"full scan CPU: --once process {full_cpu:.2f} s; the daemon's reconcile scan {daemon_full_cpu:.2f} s")
    print(f"one package ({added} files) into {env.name}: on /metrics after {latency:.2f} s "
          "(target <= debounce + 1 s = 2 s)")
    print(f"daemon CPU for it: removed {remove_cpu:.3f} s, installed {install_cpu:.3f} s; the larger is "
          f"{100 * worst / baseline:.1f}% of the smaller full scan, {baseline:.2f} s (target <= 5%)")
    print(f"idle CPU over {args.idle_seconds:.0f} s:          {100 * idle_share:.2f}% of one core (target <= 1%)")
    paths = int((generate.read_marker(tree) or {}).get("paths", 0))
    print(f"steady RSS of the daemon after it: {steady_rss / 2**20:.1f} MiB"
          + (f", {steady_rss / paths:.1f} B/path over {paths:,} paths" if paths else ""))
    print(f"(during a reconcile: a scan ran throughout the measurements; {scans} scan(s), each started as the "
          "previous one ended)")
    for label, (lat, client_cpu) in (("idle", idle_lat), ("during a reconcile", busy_lat)):
        print(f"/metrics, 20 Python scraper threads, {label}: {len(lat)} requests, p50 {1000 * pct(lat, 50):.1f} ms, "
              f"p99 {1000 * pct(lat, 99):.1f} ms (target <= 20 ms); the client's own CPU: "
              f"{client_cpu / args.scrape_seconds:.2f} of 2 cores")
    for label, result in (("idle", idle_wrk), ("during a reconcile", busy_wrk),
                          ("gzip, idle", idle_gzip), ("gzip, during a reconcile", busy_gzip)):
        if result is None:
            print(f"/metrics, wrk -c 20, {label}: wrk not installed (apt-get install wrk)")
            continue
        requests, p50, p99 = result
        print(f"/metrics, wrk -c 20, {label}: {requests} requests, p50 {1000 * p50:.1f} ms, "
              f"p99 {1000 * p99:.1f} ms (target <= 20 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
