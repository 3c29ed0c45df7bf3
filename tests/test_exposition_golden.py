"""The exposition is the public contract: the whole of ``conda-env-exporter --once`` over the fixture root
must equal tests/golden/exposition.txt once normalised (tests/golden_update.py says how), its families,
help strings and types tests/golden/families.txt, and promtool (the Prometheus project's own linter)
must find nothing to say about it. The values the golden masks as ``<bytes>`` are checked here against
the find/du oracle instead, so every value is either literal in the golden or checked.

A change to /metrics shows as a diff of the golden files. When it is intended, regenerate both with::

    .venv/bin/python -m tests.golden_update

and review the diff with the change.
"""

from __future__ import annotations

import difflib
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.deletion import delete_and_clean
from tests.exposition import Sample, samples
from tests.golden_update import FAMILIES, GOLDEN, families, normalise, run_once
from tests.oracle import contents_numbers, du_apparent_bytes, du_bytes, pkgs_oracle, tree_numbers

REGENERATE = ".venv/bin/python -m tests.golden_update"
STALE_AFTER = 90 * 86400  # the default --stale.after
Key = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture(scope="module")
def exposition(exporter_cmd: list[str], fixture_root: Path) -> str:
    return run_once(exporter_cmd, fixture_root)


def golden_diff(golden: Path, got: str, what: str) -> str:
    """A unified diff from the golden file to ``got``, empty when they are equal."""
    want = golden.read_text()
    return "".join(difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                        str(golden.relative_to(golden.parents[2])), what))


@pytest.mark.parametrize("workers", [(), ("--scan.workers", "1")], ids=["default-workers", "one-worker"])
def test_whole_exposition_matches_golden(exporter_cmd: list[str], fixture_root: Path, exposition: str,
                                         workers: tuple[str, ...]) -> None:
    text = run_once(exporter_cmd, fixture_root, *workers) if workers else exposition
    diff = golden_diff(GOLDEN, normalise(text, fixture_root), f"{' '.join(('--once', *workers))} (normalised)")
    if diff:
        pytest.fail(f"/metrics differs from the golden file. If the change is intended, regenerate it with "
                    f"`{REGENERATE}` and commit the diff:\n{diff}", pytrace=False)


def test_families_help_and_types_match_golden(exposition: str) -> None:
    diff = golden_diff(FAMILIES, families(exposition), "--once (HELP and TYPE lines)")
    if diff:
        pytest.fail(f"families differ from the golden file; if intended, regenerate with `{REGENERATE}`:\n{diff}",
                    pytrace=False)


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def oracle_bytes(root: Path, work: Path) -> dict[Key, float]:
    """Every ``_bytes`` sample the exposition of the fixture ``root`` should have, by find, du, df and
    deleting for real (tests/oracle.py, tests/deletion.py): never from exporter code."""
    pkgs = root / "pkgs"
    prefixes = {"base": root, **{p.name: p for p in sorted((root / "envs").iterdir()) if (p / "conda-meta").is_dir()}}
    out: dict[Key, float] = {}
    dedupable = 0
    for env, prefix in prefixes.items():
        labels = (("env", env), ("prefix", str(prefix)), ("root", str(root)))
        prune = [root / "envs", pkgs] if env == "base" else []
        tree, contents = tree_numbers(prefix, prune), contents_numbers(prefix, [pkgs], prune)
        out[("conda_env_unique_bytes", labels)] = tree.unique_bytes
        out[("conda_env_shared_bytes", labels)] = tree.shared_bytes
        out[("conda_env_apparent_bytes", labels)] = tree.apparent_bytes
        out[("conda_env_untracked_bytes", labels)] = contents.untracked_bytes
        out[("conda_env_copied_bytes", labels)] = contents.copied_bytes
        # the fixture lives on ext4/tmpfs, where nothing reflinks; tests/test_reflinks.py checks XFS and btrfs
        out[("conda_env_reflinked_bytes", labels)] = 0
        dedupable += contents.dedupable_bytes.get(str(pkgs), 0)
        if env == "base":  # the base env is ROOT but envs/ and pkgs/: delete the rest; ROOT itself stays,
            rest = [p for p in sorted(root.iterdir()) if p.name not in ("envs", "pkgs")]  # so add its blocks
            freed = delete_and_clean(root, rest, work).freed_bytes + root.stat().st_blocks * 512
        else:
            freed = delete_and_clean(root, [prefix], work).freed_bytes
        out[("conda_env_reclaimable_bytes", labels)] = freed
    owners: dict[str, list[Path]] = {}
    for env, prefix in prefixes.items():
        if env != "base":
            owners.setdefault(_owner(prefix), []).append(prefix)
    for owner, owned in owners.items():
        key = ("conda_owner_reclaimable_bytes", (("owner", owner), ("root", str(root))))
        out[key] = delete_and_clean(root, owned, work).freed_bytes
    now = time.time()
    stale = [p for env, p in prefixes.items() if env != "base" and (p / "conda-meta" / "history").is_file()
             and now - (p / "conda-meta" / "history").stat().st_mtime > STALE_AFTER]
    root_labels = (("root", str(root)),)
    out[("conda_root_stale_reclaimable_bytes", root_labels)] = delete_and_clean(root, stale, work).freed_bytes
    cache_labels = (("pkgs_dir", str(pkgs)), ("root", str(root)))
    for name, value in pkgs_oracle(pkgs).items():
        if name.endswith("_bytes"):
            out[(name, cache_labels)] = value
    out[("conda_pkgs_dedupable_bytes", cache_labels)] = dedupable
    out[("conda_root_bytes", root_labels)] = du_bytes(root)
    out[("conda_root_apparent_bytes", root_labels)] = du_apparent_bytes(root)
    df = subprocess.run(["df", "-B1", "--output=size", str(root)], check=True, capture_output=True, text=True)
    out[("conda_root_filesystem_size_bytes", root_labels)] = int(df.stdout.split()[-1])
    return out


def test_every_masked_byte_value_equals_the_oracle(exposition: str, fixture_root: Path,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    masked = normalise(exposition, fixture_root)
    assert "<bytes>" in masked
    got = {(name, labels): value for name, series in samples(exposition).items() for labels, value in series.items()
           if name.endswith("_bytes") and name != "conda_root_filesystem_avail_bytes"}
    assert sum(line.endswith(" <bytes>") for line in masked.splitlines()) == len(got)
    expected = oracle_bytes(fixture_root, tmp_path_factory.mktemp("golden-oracle"))
    assert got.keys() == expected.keys(), "every <bytes> of the golden needs an oracle value here"
    wrong = {f"{name}{dict(labels)}": (got[(name, labels)], value)
             for (name, labels), value in expected.items() if got[(name, labels)] != value}
    assert not wrong, f"(exporter, oracle) differ: {wrong}"
    assert any(value for value in got.values())  # not vacuous


def test_masked_times_and_durations_are_consistent(exposition: str, fixture_root: Path) -> None:
    """What the golden masks as ``<timestamp>``, ``<seconds>``, ``<bucket>`` and ``<avail>`` still has to
    hold together: the oldest result is the least recent env scan, history times are the files' mtimes,
    the one scan's duration lands in the buckets it should."""
    got = samples(exposition)
    scanned = got["conda_env_last_scan_timestamp_seconds"]
    (success,) = got["conda_exporter_last_scan_success_timestamp_seconds"].values()
    assert got["conda_exporter_oldest_result_timestamp_seconds"] == {(): min(scanned.values())}
    assert all(at <= success for at in scanned.values())
    for labels, at in got["conda_env_last_transaction_timestamp_seconds"].items():
        assert at == (Path(dict(labels)["prefix"]) / "conda-meta" / "history").stat().st_mtime, labels
    (duration,) = got["conda_exporter_last_scan_duration_seconds"].values()
    assert got["conda_exporter_scan_duration_seconds_sum"] == {(("trigger", "startup"),): duration}
    buckets: Sample = got["conda_exporter_scan_duration_seconds_bucket"]
    for labels, count in buckets.items():
        le = float(dict(labels)["le"])
        assert count == (1.0 if duration <= le else 0.0), labels
    (size,) = got["conda_root_filesystem_size_bytes"].values()
    (avail,) = got["conda_root_filesystem_avail_bytes"].values()
    assert 0 <= avail <= size


def test_promtool_check_metrics_is_clean(exposition: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: tests/run installs Debian's prometheus package"
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_label_names_are_bounded(exposition: str) -> None:
    allowed = {"root", "env", "prefix", "pkgs_dir", "kind", "trigger", "result", "mode", "le", "package", "reason"}
    allowed |= {"version", "python_version", "owner", "walker"}  # info metrics: one series per env or process
    for name, series in samples(exposition).items():
        for labels in series:
            assert {k for k, _ in labels} <= allowed, name
