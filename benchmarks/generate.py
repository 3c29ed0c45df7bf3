"""Deterministic generator of conda-like roots for benchmarking ``conda-env-exporter``.

``python benchmarks/generate.py --size {small,medium,large,wide,huge} [--out DIR] [--seed N]`` builds, at DIR
(default ``benchmarks/trees/<size>``), a conda root shaped like a real one:

- ``pkgs/<name>-<version>-<build>/``: extracted packages (``info/index.json``, ``info/paths.json``, ...) whose
  files have realistic relative paths (``site-packages/<mod>/...``, ``lib/python3.X/...``, ``include/``,
  ``share/``) and sizes (mostly a few KiB, few of several MiB), symlinks (``libfoo.so -> libfoo.so.1``),
  occasionally two names of one inode inside a package; some ``*.conda`` / ``*.tar.bz2`` tarballs;
  ``cache/`` and ``urls.txt``.
- the base env at the root itself and ``envs/<name>/`` envs that hardlink (``os.link``) their packages' files
  from ``pkgs/``, with ``conda-meta/<dist>.json`` prefix records and ``conda-meta/history``; files with a
  prefix placeholder are copied, one env is created with ``--copy``; noarch Python packages get per-env
  ``__pycache__/*.pyc`` and entry points (unique files); some envs have pip-installed packages (unique files).
- orphaned packages (linked into envs, then deleted from ``pkgs/``), unreferenced packages (extracted,
  linked nowhere: older versions and leftovers of removed envs), a non-env directory in ``envs/``.

Every size is in bytes and every byte is really written (no sparse files), so allocated sizes are real.
The generator is idempotent: a finished tree carries ``.benchmark-tree.json`` (the marker, with the counts) and
is reused when its size, seed and generator version match.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

GENERATOR_VERSION = 1
MARKER = ".benchmark-tree.json"
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
PYVERS = ("3.9", "3.10", "3.11", "3.12")
CORE = ("_libgcc_mutex", "libgcc-ng", "libstdcxx-ng", "libzlib", "openssl", "ca-certificates", "ncurses",
        "readline", "sqlite", "tk", "xz", "bzip2", "libffi", "tzdata", "pip", "setuptools", "wheel")
BASE_EXTRA = ("conda", "conda-libmamba-solver", "libmamba", "requests", "urllib3", "certifi", "ruamel.yaml")
SYLLABLES = ("py", "lib", "num", "sci", "data", "arrow", "geo", "net", "xml", "json", "yaml", "web", "plot",
             "stat", "text", "io", "zmq", "tor", "ker", "las", "blo", "sc", "mat", "qt", "gl", "cry", "pto",
             "http", "tls", "dask", "nu", "ba", "pan", "das", "fast", "tool", "kit", "core", "ext", "gdal")
BUF = random.Random("content").randbytes(1 << 20)  # content source for every written file (1 MiB)


@dataclass(frozen=True)
class Profile:
    """Shape of one tree size; counts are numbers of things, sizes bytes."""

    projects: int  # distinct package names in the catalog
    envs: int  # named envs under envs/ (the base env comes on top)
    pkgs_per_env: tuple[int, int]  # non-core packages per env, inclusive range
    files_median: float  # median number of files of an ordinary package
    python_files: int  # stdlib .py files of each python package (each also ships a .pyc)
    files_per_dir: int  # average files per directory of a package's file trees


PROFILES = {
    "small": Profile(60, 4, (8, 20), 10, 150, 15),
    "medium": Profile(700, 24, (65, 170), 21, 1000, 20),
    "large": Profile(1800, 44, (175, 400), 33, 1600, 21),
    # 100 envs (with base) of a medium cache: the shape of the /metrics latency target
    "wide": Profile(700, 99, (40, 120), 21, 1000, 20),
    # ~9.5M paths: a site's central install with 300 envs of a large cache (shared filers hold such trees)
    "huge": Profile(2400, 299, (175, 400), 33, 1600, 21),
}


class Entry(NamedTuple):
    """One path of a package: ``path`` relative to the package dir, ``size`` in bytes; ``target`` for a
    symlink, ``twin`` for a second name of another entry's inode, ``prefix`` for a file with a placeholder."""

    path: str
    size: int
    target: str = ""
    twin: str = ""
    prefix: bool = False


@dataclass
class Package:
    """An extracted package: ``kind`` is noarch (site-packages/), pyext, python, clib or tool."""

    name: str
    version: str
    build: str
    kind: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


def _size(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    """A log-normal size in bytes around ``median``, at most ``cap``."""
    return min(cap, int(rng.lognormvariate(0.0, sigma) * median) + 1)


def _tree(
    rng: random.Random, base: str, n: int, exts: tuple[str, ...], *, pyc: str = "", per_dir: int = 15
) -> list[Entry]:
    """``n`` files spread over a nested directory tree under ``base`` (``per_dir`` files a dir, depth ≤ 4); with ``pyc``
    (e.g. ``cpython-311``) every ``.py`` also gets its ``__pycache__/<stem>.<pyc>.pyc``."""
    dirs = [base]
    for i in range(max(0, n // per_dir)):
        parent = rng.choice(dirs)
        if parent.count("/") - base.count("/") < 4:
            dirs.append(f"{parent}/{rng.choice(SYLLABLES)}{rng.choice(SYLLABLES)}{i}")
    out: list[Entry] = []
    for i in range(n):
        d = dirs[i] if i < len(dirs) else rng.choice(dirs)
        ext = exts[0] if i < len(dirs) else rng.choice(exts)
        stem = "__init__" if i < len(dirs) and ext == ".py" else f"{rng.choice(SYLLABLES)}_{i}"
        size = _size(rng, 1600 if ext == ".py" else 1200, 1.3, 400_000)
        out.append(Entry(f"{d}/{stem}{ext}", size))
        if pyc and ext == ".py":
            out.append(Entry(f"{d}/__pycache__/{stem}.{pyc}.pyc", size * 2 // 3 + 200))
    return out


def package_entries(pkg: Package, rng: random.Random, nfiles: int, pyver: str, per_dir: int) -> list[Entry]:
    """The paths of ``pkg`` (relative to its package dir) with sizes in bytes."""

    def tree(base: str, n: int, exts: tuple[str, ...], pyc: str = "") -> list[Entry]:
        return _tree(rng, base, n, exts, pyc=pyc, per_dir=per_dir)

    n, mod, tag = pkg.name, pkg.name.replace("-", "_").replace(".", "_"), "cpython-" + pyver.replace(".", "")
    if pkg.kind == "python":
        lib = f"lib/python{pyver}"
        es = [Entry(f"bin/python{pyver}", 1_200_000), Entry("bin/python", 0, f"python{pyver}"),
              Entry("bin/python3", 0, f"python{pyver}"), Entry("bin/2to3", 300, prefix=True),
              Entry(f"lib/libpython{pyver}.so.1.0", 2_000_000), Entry(f"{lib}/site-packages/README.txt", 119)]
        return es + tree(lib, nfiles, (".py",) * 8 + (".txt", ".so"), tag) + tree(
            f"include/python{pyver}", nfiles // 20, (".h",))
    if pkg.kind in ("noarch", "pyext"):
        sp = "site-packages" if pkg.kind == "noarch" else f"lib/python{pyver}/site-packages"
        exts = (".py",) * 6 + (".pyi", ".json", ".txt") + ((".so",) if pkg.kind == "pyext" else ())
        es = tree(f"{sp}/{mod}", nfiles, exts, tag if pkg.kind == "pyext" else "")
        di = f"{sp}/{mod}-{pkg.version}.dist-info"
        es += [Entry(f"{di}/{f}", _size(rng, 900, 1.0, 60_000))
               for f in ("METADATA", "RECORD", "INSTALLER", "WHEEL", "LICENSE", "top_level.txt")]
        if pkg.kind == "noarch" and rng.random() < 0.3:
            es.append(Entry(f"python-scripts/{n}", 250, prefix=True))
        return [e._replace(size=_size(rng, 60_000, 1.5, 3_000_000)) if e.path.endswith(".so") else e for e in es]
    if pkg.kind == "clib":
        so = f"lib/lib{mod}.so"
        es = [Entry(f"{so}.{pkg.version}", _size(rng, 60_000, 1.6, 4_000_000)),
              Entry(f"{so}.{pkg.version.split('.')[0]}", 0, f"lib{mod}.so.{pkg.version}"),
              Entry(so, 0, f"lib{mod}.so.{pkg.version}"), Entry(f"lib/pkgconfig/{n}.pc", 400, prefix=True),
              Entry(f"lib/cmake/{n}/{n}-config.cmake", 3000, prefix=True), Entry(f"share/licenses/{n}/LICENSE", 1500)]
        return es + tree(f"include/{mod}", nfiles * 2 // 3, (".h",)) + tree(
            f"share/doc/{n}", nfiles // 3, (".html", ".txt", ".png"))
    es = [Entry(f"bin/{n}", _size(rng, 80_000, 1.4, 6_000_000)), Entry(f"bin/{n}-config", 2200, prefix=True),
          Entry(f"share/man/man1/{n}.1", _size(rng, 6000, 0.8, 80_000)), Entry(f"etc/{n}/{n}.conf", 700, prefix=True)]
    if rng.random() < 0.2:  # two names of one binary inside the package (conda clean misjudges these)
        es.append(Entry(f"bin/{n}-alt", 0, twin=f"bin/{n}"))
    return es + tree(f"share/{n}", nfiles, (".dat", ".txt", ".xml", ".json"))


class Generator:
    """Writes one tree; counts the bytes it writes (``written``, bytes)."""

    def __init__(self, root: Path, profile: Profile, seed: int) -> None:
        self.root, self.profile, self.seed = root, profile, seed
        self.rng = random.Random(f"{seed}:catalog")
        self.made: set[str] = set()
        self.pkgs: dict[str, Package] = {}
        self.written = 0
        names = [*CORE, *BASE_EXTRA, "python"]
        while len(names) < profile.projects:
            name = "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 3)))
            if name not in names:
                names.append(name)
        kinds = dict.fromkeys(CORE[:-3], "clib") | dict.fromkeys(("pip", "setuptools", "wheel", "requests", "urllib3",
            "certifi", "conda-libmamba-solver"), "noarch") | {"tzdata": "tool", "ca-certificates": "tool",
            "python": "python", "conda": "pyext", "ruamel.yaml": "pyext", "libmamba": "clib"}
        self.kind = {n: kinds.get(n) or self.rng.choices(("noarch", "pyext", "clib", "tool"), (45, 20, 25, 10))[0]
                     for n in names}
        self.nfiles = {n: max(2, int(self.rng.lognormvariate(0, 1.1) * profile.files_median)) for n in names}
        self.weight = {n: 1.0 / (rank + 1) ** 0.6 for rank, n in enumerate(names[len(CORE) + len(BASE_EXTRA) + 1:])}

    def mkdirs(self, path: str) -> None:
        """Create ``path`` and its missing parents (absolute path)."""
        if path in self.made:
            return
        parent = os.path.dirname(path)
        if parent not in self.made:
            if os.path.isdir(parent):
                self.made.add(parent)
            else:
                self.mkdirs(parent)
        os.mkdir(path)
        self.made.add(path)

    def write(self, path: str, size: int) -> None:
        """Write ``size`` real bytes to a new file ``path``."""
        self.mkdirs(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            left, off = size, size % 4096
            while left > 0:
                chunk = min(left, len(BUF) - off)
                left -= os.write(fd, BUF[off:off + chunk])
                off = 0
        finally:
            os.close(fd)
        self.written += size

    def write_json(self, path: str, obj: Any) -> None:
        """Write ``obj`` as compact JSON to a new file ``path``."""
        self.mkdirs(os.path.dirname(path))
        self.written += Path(path).write_bytes(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())

    def package(self, name: str, pyver: str, old: bool = False) -> Package:
        """The package of ``name`` for Python ``pyver`` (an older version with ``old``), extracted on first use."""
        kind, r = self.kind[name], random.Random(f"{self.seed}:ver:{name}")
        ver = f"{r.randint(0, 4)}.{r.randint(0, 30) + (0 if old else 31)}.{r.randint(0, 9)}"
        build = {"noarch": "pyhd8ed1ab_0", "pyext": f"py{pyver.replace('.', '')}h{r.getrandbits(28):07x}_0",
                 "python": f"h{r.getrandbits(28):07x}_0_cpython"}.get(kind, f"h{r.getrandbits(28):07x}_1")
        pkg = Package(name, pyver + ".1" if kind == "python" else ver, build, kind)
        if pkg.dist in self.pkgs:
            return self.pkgs[pkg.dist]
        rng = random.Random(f"{self.seed}:pkg:{pkg.dist}")
        nfiles = self.profile.python_files if kind == "python" else self.nfiles[name]
        pkg.entries = package_entries(pkg, rng, nfiles, pyver, self.profile.files_per_dir)
        base = str(self.root / "pkgs" / pkg.dist)
        for e in pkg.entries:
            dst = f"{base}/{e.path}"
            self.mkdirs(os.path.dirname(dst))
            if e.target:
                os.symlink(e.target, dst)
            elif e.twin:
                os.link(f"{base}/{e.twin}", dst)
            else:
                self.write(dst, e.size)
        paths = [{"_path": e.path, "path_type": "softlink" if e.target else "hardlink", "size_in_bytes": e.size}
                 | ({"file_mode": "text", "prefix_placeholder": PLACEHOLDER} if e.prefix else {})
                 for e in pkg.entries]
        index = {"name": name, "version": pkg.version, "build": build, "build_number": 0, "depends": [],
                 "subdir": "noarch" if kind == "noarch" else "linux-64", "license": "BSD-3-Clause"}
        self.write_json(f"{base}/info/index.json", index)
        self.write_json(f"{base}/info/paths.json", {"paths": paths, "paths_version": 1})
        self.write_json(f"{base}/info/about.json", {"home": f"https://example.org/{name}", "summary": name})
        self.write(f"{base}/info/files", sum(len(e.path) + 1 for e in pkg.entries))
        if rng.random() < 0.5:  # the downloaded tarball was kept
            total = sum(e.size for e in pkg.entries)
            ext = ".conda" if rng.random() < 0.75 else ".tar.bz2"
            self.write(str(self.root / "pkgs" / (pkg.dist + ext)), min(1_500_000, total // 4 + 2000))
        self.pkgs[pkg.dist] = pkg
        return pkg

    def env_path(self, pkg: Package, path: str, pyver: str) -> str:
        if pkg.kind == "noarch" and path.startswith("site-packages/"):
            return f"lib/python{pyver}/{path}"
        return "bin/" + path[len("python-scripts/"):] if path.startswith("python-scripts/") else path

    def install(self, prefix: Path, name: str, picks: list[str], pyver: str, copy: bool) -> None:
        """Create env ``name`` at ``prefix`` linking the packages ``picks`` (``copy``: like ``conda create --copy``)."""
        rng, taken, history = random.Random(f"{self.seed}:env:{name}"), set[str](), list[str]()
        tag = "cpython-" + pyver.replace(".", "")
        for pick in picks:
            pkg = self.package(pick, pyver)
            src, records = str(self.root / "pkgs" / pkg.dist), []
            for e in pkg.entries:
                rel = self.env_path(pkg, e.path, pyver)
                if rel in taken:
                    continue
                taken.add(rel)
                dst = f"{prefix}/{rel}"
                self.mkdirs(os.path.dirname(dst))
                if e.target:
                    os.symlink(e.target, dst)
                elif e.prefix or copy:
                    self.write(dst, e.size + len(str(prefix)) - len(PLACEHOLDER) if e.prefix else e.size)
                else:
                    os.link(f"{src}/{e.path}", dst)
                records.append({"_path": rel, "path_type": "softlink" if e.target else "hardlink",
                                "size_in_bytes": e.size})
                if pkg.kind == "noarch" and rel.endswith(".py"):  # compiled at link time: unique to the env
                    d, stem = os.path.split(rel)
                    pyc = f"{d}/__pycache__/{stem[:-3]}.{tag}.pyc"
                    self.write(f"{prefix}/{pyc}", e.size * 2 // 3 + 200)
                    records.append({"_path": pyc, "path_type": "pyc_file", "size_in_bytes": e.size * 2 // 3 + 200})
            record = {"name": pkg.name, "version": pkg.version, "build": pkg.build, "build_number": 0,
                      "channel": "https://conda.anaconda.org/conda-forge", "fn": pkg.dist + ".conda",
                      "files": [r["_path"] for r in records], "extracted_package_dir": src,
                      "paths_data": {"paths": records, "paths_version": 1}, "requested_spec": pkg.name,
                      "link": {"source": src, "type": 3 if copy else 1}, "depends": []}
            self.write_json(f"{prefix}/conda-meta/{pkg.dist}.json", record)
            history.append(f"+conda-forge/linux-64::{pkg.dist}\n")
        head = f"==> 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 12:00:00 <==\n# cmd: conda create -n {name}\n"
        self.mkdirs(f"{prefix}/conda-meta")
        Path(f"{prefix}/conda-meta/history").write_text(head + "".join(history))
        for i in range(rng.randint(1, 4) if rng.random() < 0.35 else 0):  # pip-installed: conda knows nothing
            mod = f"pipmod{rng.randint(0, 999)}_{i}"
            for e in _tree(rng, f"lib/python{pyver}/site-packages/{mod}", rng.randint(5, 120), (".py", ".py", ".txt")):
                self.write(f"{prefix}/{e.path}", e.size)
            self.write(f"{prefix}/lib/python{pyver}/site-packages/{mod}-1.0.dist-info/INSTALLER", 4)

    def build(self) -> None:
        """Generate the whole tree under ``self.root``."""
        p, rng, root = self.profile, self.rng, self.root
        for top in ("pkgs", "envs"):
            self.mkdirs(str(root / top))
        extra = list(self.weight)
        self.install(root, "base", [*CORE, *BASE_EXTRA, "python"], "3.11", False)
        for path, size in (("LICENSE.txt", 9000), ("condabin/conda", 1200), ("etc/profile.d/conda.sh", 2400),
                           ("pkgs/urls.txt", 4000), ("pkgs/cache/497deca9.json", 900_000),
                           ("pkgs/cache/09cdf8bf.json", 600_000), ("envs/.conda_envs_dir_test", 0),
                           ("envs/scratch/notes.txt", 3000), ("envs/scratch/data/run1.csv", 40_000)):
            self.write(str(root / path), size)
        for i in range(p.envs):
            n = rng.randint(*p.pkgs_per_env)
            picks: list[str] = []
            while len(picks) < n:
                picks += [x for x in rng.choices(extra, [self.weight[x] for x in extra], k=n) if x not in picks]
            pyver = rng.choices(PYVERS, (1, 2, 4, 3))[0]
            name = ("proj-", "ml-", "analysis-", "test-", "user-")[i % 5] + str(i)
            self.install(root / "envs" / name, name, [*CORE, "python", *picks[:n]], pyver, i == p.envs - 1)
        linked = [d for d, pk in self.pkgs.items() if pk.name not in CORE + BASE_EXTRA + ("python",)]
        for dist in rng.sample(linked, max(1, len(linked) // 30)):  # orphans: cache dir removed after linking
            shutil.rmtree(root / "pkgs" / dist)
            for ext in (".conda", ".tar.bz2"):
                (root / "pkgs" / (dist + ext)).unlink(missing_ok=True)
        for name in rng.sample(extra, max(2, len(extra) // 12)):  # unreferenced: older versions, removed envs
            self.package(name, rng.choice(PYVERS), old=True)


def count_tree(root: Path) -> dict[str, int]:
    """Numbers of paths (what ``find ROOT | wc -l`` prints), dirs, regular files and symlinks under ``root``."""
    counts, stack = {"dirs": 1, "files": 0, "symlinks": 0}, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_symlink():
                    counts["symlinks"] += 1
                elif entry.is_dir():
                    counts["dirs"] += 1
                    stack.append(entry.path)
                else:
                    counts["files"] += 1
    return counts | {"paths": sum(counts.values())}


def read_marker(out: Path) -> dict[str, Any] | None:
    """The marker of a tree at ``out`` (its counts and how it was made), or None."""
    try:
        data: dict[str, Any] = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data


def generate(size: str, out: Path, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Make (or reuse) the ``size`` tree at ``out``; returns its marker (counts, seconds, bytes written)."""
    made = {"size": size, "seed": seed, "generator_version": GENERATOR_VERSION, "profile": asdict(PROFILES[size])}
    want: dict[str, Any] = json.loads(json.dumps(made))  # as it reads back from the marker
    marker = read_marker(out)
    if marker and marker.get("complete") and all(marker.get(k) == v for k, v in want.items()):
        return marker
    if out.exists() and any(out.iterdir()):
        if marker is None:
            raise SystemExit(f"generate: {out} is not empty and was not made by this generator; refusing to touch it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(want | {"complete": False}))
    t0 = time.perf_counter()
    gen = Generator(out.resolve(), PROFILES[size], seed)
    gen.build()
    seconds = time.perf_counter() - t0
    marker = want | {"complete": True, "seconds": round(seconds, 2), "bytes_written": gen.written,
                     "envs": PROFILES[size].envs + 1, "packages_extracted": len(gen.pkgs)}
    marker |= count_tree(out)  # the marker itself is counted: it is written over, not added
    (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    if not quiet:
        print(f"generated {out} in {seconds:.1f} s", file=sys.stderr)
    return marker


def main(argv: list[str] | None = None) -> int:
    """Command line: prints the path count of the tree (made or reused) on the last line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=sorted(PROFILES), default="small")
    parser.add_argument("--out", type=Path, help="tree directory (default benchmarks/trees/<size>)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or Path(__file__).resolve().parent / "trees" / args.size
    m = generate(args.size, out, args.seed)
    print(f"{out}: {m['paths']} paths ({m['dirs']} dirs, {m['files']} files, {m['symlinks']} symlinks), "
          f"{m['envs']} envs, {m['packages_extracted']} packages extracted, {m['bytes_written'] / 2**20:.0f} MiB "
          f"written in {m['seconds']} s")
    print(m["paths"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
