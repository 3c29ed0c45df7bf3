"""Change a fixture root the way conda and pip do, and check a running exporter against the oracle."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from tests.exposition import by_label, samples
from tests.httpwait import fetch
from tests.oracle import du_bytes, pkgs_oracle, tree_numbers

ENV_METRICS = {
    "conda_env_unique_bytes": "unique_bytes",
    "conda_env_shared_bytes": "shared_bytes",
    "conda_env_apparent_bytes": "apparent_bytes",
    "conda_env_files": "files",
    "conda_env_hardlinked_files": "hardlinked_files",
}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def packages(root: Path) -> list[Path]:
    """Extracted package dirs of the cache."""
    return sorted(p for p in (root / "pkgs").iterdir() if p.is_dir() and (p / "info").is_dir())


def package_files(package: Path) -> list[Path]:
    """Files of an extracted package, relative to it, without info/."""
    out = []
    for dirpath, _dirs, files in os.walk(package):
        for name in files:
            rel = Path(dirpath, name).relative_to(package)
            if rel.parts[0] != "info":
                out.append(rel)
    return sorted(out)


def install(prefix: Path, package: Path) -> None:
    """Hardlink a cache package's files into ``prefix``, then write its conda-meta record atomically."""
    for rel in package_files(package):
        target = prefix / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(package / rel, target)
    name, version, build = package.name.rsplit("-", 2)
    record = {"name": name, "version": version, "build": build, "files": [str(r) for r in package_files(package)],
              "link": {"source": str(package), "type": 1}}
    (prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
    _write_atomic(prefix / "conda-meta" / f"{package.name}.json", json.dumps(record))


def remove(prefix: Path, record: Path) -> None:
    """Unlink a package's files from ``prefix`` and delete its record."""
    for rel in json.loads(record.read_text()).get("files", []):
        (prefix / rel).unlink(missing_ok=True)
    record.unlink()


def create_env(root: Path, name: str, package: Path) -> Path:
    prefix = root / "envs" / name
    install(prefix, package)
    _write_atomic(prefix / "conda-meta" / "history", f"# cmd: conda create -n {name}\n")
    return prefix


def pip_install(prefix: Path, name: str, size: int) -> None:
    site = prefix / "lib" / "python3.11" / "site-packages"
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_bytes(b"p" * size)


def envs_of(root: Path) -> dict[str, Path]:
    envs = {"base": root} if (root / "conda-meta").is_dir() else {}
    envs.update({p.name: p for p in (root / "envs").iterdir() if (p / "conda-meta").is_dir()})
    return envs


def mismatches(text: str, root: Path) -> list[str]:
    """Every way the exposition ``text`` differs from the find/du oracle for ``root`` (empty: equal)."""
    problems = []
    envs = envs_of(root)
    got_envs = set(by_label(text, "conda_env_unique_bytes", "env"))
    if got_envs != set(envs):
        return [f"envs {sorted(got_envs)} != {sorted(envs)}"]
    for env, prefix in envs.items():
        prune = [root / "envs", root / "pkgs"] if env == "base" else []
        expected = tree_numbers(prefix, prune)
        for metric, attr in ENV_METRICS.items():
            value = by_label(text, metric, "env")[env]
            if value != getattr(expected, attr):
                problems.append(f"{metric}{{env={env}}} {value} != {getattr(expected, attr)}")
    got = samples(text)
    for metric, expected_value in pkgs_oracle(root / "pkgs").items():
        if list(got[metric].values()) != [expected_value]:
            problems.append(f"{metric} {list(got[metric].values())} != {expected_value}")
    if list(got["conda_root_bytes"].values()) != [du_bytes(root)]:
        problems.append(f"conda_root_bytes {list(got['conda_root_bytes'].values())} != {du_bytes(root)}")
    return problems


def metrics_match(port: int, root: Path) -> str | None:
    """The exposition when it matches the oracle, else None (for tests.httpwait.poll)."""
    status, text = fetch(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return None
    return None if mismatches(text, root) else text


def random_operation(rng: random.Random, root: Path, counter: list[int]) -> str:  # noqa: PLR0911
    """Apply one random conda/pip operation to ``root``; returns what was done."""
    envs = {n: p for n, p in envs_of(root).items() if n != "base"}
    cache = packages(root)
    choice = rng.choice(["install", "remove", "clean", "create", "delete", "pip"])
    if choice == "install" and envs and cache:
        name = rng.choice(sorted(envs))
        package = rng.choice(cache)
        install(envs[name], package)
        return f"install {package.name} into {name}"
    if choice == "remove" and envs:
        name = rng.choice(sorted(envs))
        records = sorted((envs[name] / "conda-meta").glob("*.json"))
        if records:
            record = rng.choice(records)
            remove(envs[name], record)
            return f"remove {record.name} from {name}"
    if choice == "clean" and cache:
        package = rng.choice(cache)
        shutil.rmtree(package)
        return f"rm -r cache {package.name}"
    if choice == "create" and cache:
        counter[0] += 1
        name = f"new{counter[0]}"
        create_env(root, name, rng.choice(cache))
        return f"create {name}"
    if choice == "delete" and envs:
        name = rng.choice(sorted(envs))
        shutil.rmtree(envs[name])
        return f"delete env {name}"
    if envs:
        name = rng.choice(sorted(envs))
        counter[0] += 1
        pip_install(envs[name], f"pippkg{counter[0]}", rng.randrange(1, 50_000))
        return f"pip into {name}"
    return "nothing"
