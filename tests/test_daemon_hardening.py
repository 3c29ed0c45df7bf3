"""Daemon hardening (issue 18): forged state files are confirmed before they count as verified (item 6), a change
made right after a new env's first walk is never lost (item 10), narrowing what a batch re-queues keeps link
deltas exact (should fix 1), and changes no watch sees are found by the periodic check (should fix 3).

Real subprocesses, real inotify, real HTTP, real files; numbers against the find/du oracle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from exporter.daemon.incremental import rescan
from exporter.daemon.targets import Target
from exporter.discover.roots import discover_root
from exporter.model import Snapshot
from exporter.snapshot.full import full_scan
from tests.condaops import create_env, install, metrics_match, mismatches, package_files, packages, remove
from tests.exposition import by_label, samples
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch, poll
from tests.options import scan_options
from tests.oracle import tree_numbers
from tests.test_daemon import DEADLINE, Running, start, stop

FORGED = 7 * 2**40  # 7 TiB: no env of the fixture root is anywhere near it


def _forge(node: Any) -> int:
    """Set every env's and cache's ``unique_bytes`` in a parsed state file to FORGED; how many were set."""
    count = 0
    if isinstance(node, dict):
        if "unique_bytes" in node:
            node["unique_bytes"] = FORGED
            count += 1
        children = list(node.values())
    else:
        children = node if isinstance(node, list) else []
    return count + sum(_forge(child) for child in children)


def _observe(running: Running) -> tuple[float, bool]:
    """(results_verified, whether a forged number is served) from one scrape."""
    status, text = fetch(f"http://127.0.0.1:{running.port}/metrics")
    assert status == 200, status
    got = samples(text)
    forged = any(v == FORGED for v in got["conda_env_unique_bytes"].values())
    return sum(got["conda_exporter_results_verified"].values()), forged


def _forged_restart(exporter_cmd: list[str], tmp_path: Path, change_meanwhile: bool) -> None:
    root = build_fixture_root(tmp_path / "conda")
    state = tmp_path / "state.json"
    first = start(exporter_cmd, root, "--state.file", str(state))
    first.converge("the first run")
    stop(first)
    document = json.loads(state.read_text())
    assert _forge(document["snapshot"]) >= 4
    state.write_text(json.dumps(document))  # valid types, fingerprints as on disk: only the numbers lie
    if change_meanwhile:  # a real change to web: its rescan (after a 2 s debounce) comes before the confirmation
        (root / "envs" / "web" / "conda-meta" / "history").write_text("# cmd: conda install x\n")
    second = start(exporter_cmd, root, "--state.file", str(state), debounce=2.0 if change_meanwhile else 0.2)
    try:
        seen = [_observe(second)]
        if change_meanwhile:  # the loaded numbers are served at once, and not as verified
            assert seen[0] == (0, True), seen[0]

        def verified() -> bool | None:
            seen.append(_observe(second))
            return True if seen[-1][0] == 1 else None

        poll(verified, DEADLINE, "the loaded numbers to be confirmed by a scan")
        assert all(not forged for ok, forged in seen if ok == 1), seen  # never a forged number as verified
        second.converge("the true numbers after the confirming scan")
        assert _observe(second) == (1, False)
        text = fetch(f"http://127.0.0.1:{second.port}/metrics")[1]
        scans = samples(text)["conda_exporter_scans_total"]
        assert scans.get((("result", "success"), ("trigger", "startup")), 0) == 0  # served from the state file
        assert scans[(("result", "success"), ("trigger", "reconcile"))] >= 1  # then confirmed at low priority
    finally:
        stop(second)
    assert str(FORGED) not in state.read_text()  # saved again only once confirmed: with the true numbers


def test_forged_state_is_confirmed_before_it_counts_as_verified(exporter_cmd: list[str], tmp_path: Path) -> None:
    """Fingerprints all match: before the fix, results_verified was 1 at once and the forged numbers stayed."""
    _forged_restart(exporter_cmd, tmp_path, change_meanwhile=False)


def test_forged_state_stays_unverified_through_a_rescan(exporter_cmd: list[str], tmp_path: Path) -> None:
    """One env changed while down: before the fix its rescan published everything as verified, forged numbers
    of the other envs included."""
    _forged_restart(exporter_cmd, tmp_path, change_meanwhile=True)


def test_a_write_right_after_a_new_envs_first_walk_is_seen(exporter_cmd: list[str], tmp_path: Path) -> None:
    """Item 10. A new env is created, and written into until its first numbers are served: the last writes
    land between its first walk and the moment it is watched. Before the fix (watches added after the walk),
    they were lost until the reconcile in most tries."""
    root = build_fixture_root(tmp_path / "conda")
    running = start(exporter_cmd, root, "--watch.mode", "inotify", "--scan.interval", "0")
    numpy = next(p for p in packages(root) if p.name.startswith("numpy"))
    try:
        running.converge("startup")
        for attempt in range(10):
            name = f"race{attempt}"
            prefix = create_env(root, name, numpy)
            writes, deadline = 0, time.monotonic() + DEADLINE
            while name not in by_label(fetch(f"http://127.0.0.1:{running.port}/metrics")[1],
                                       "conda_env_unique_bytes", "env"):
                (prefix / "conda-meta" / f"note-{writes}.txt").write_bytes(b"n" * 100 * (writes + 1))
                writes += 1
                assert time.monotonic() < deadline, f"{name} never appeared"
            try:
                poll(lambda: metrics_match(running.port, root), 15.0, f"try {attempt}: {writes} writes", 0.1)
            except AssertionError:
                text = fetch(f"http://127.0.0.1:{running.port}/metrics")[1]
                raise AssertionError(f"try {attempt} after {writes} writes: {mismatches(text, root)}") from None
    finally:
        stop(running)


def test_a_file_added_in_share_is_found_by_the_periodic_check(exporter_cmd: list[str], tmp_path: Path) -> None:
    """Should fix 3. No watch is on share/ (only conda-meta/ and site-packages/ are): before the fix the file
    stayed uncounted until the reconcile, results_verified 1 all along."""
    root = build_fixture_root(tmp_path / "conda")
    running = start(exporter_cmd, root, "--watch.mode", "inotify", "--watch.poll-interval", "0.5",
                     "--scan.interval", "0")
    try:
        running.converge("startup")
        share = root / "envs" / "web" / "share"
        share.mkdir(exist_ok=True)
        (share / "added-by-hand.dat").write_bytes(b"s" * 50_000)
        running.converge("a file added directly in share/")
        shutil.copytree(root / "envs" / "web" / "share", root / "envs" / "analysis" / "share" / "copied")
        running.converge("a new dir in analysis/share/ (a file in a new dir: the dir's creation is seen)")
    finally:
        stop(running)


def _unique_bytes(snapshot: Snapshot, prefix: Path) -> int:
    return next(e.usage.unique_bytes for e in snapshot.envs if e.prefix == str(prefix))


def _walked_while_changing(root: Path, suspects: bool) -> tuple[int, int]:
    """``analysis`` walked after ``web`` linked a package only it and the cache hold (as if during its batch),
    then web's rescan (analysis a suspect of it or not), then the package leaves web and the cache, in order
    and in-process; analysis's unique bytes then, and the oracle's."""
    analysis, web = root / "envs" / "analysis", root / "envs" / "web"
    package = next(p for p in packages(root) if (analysis / "conda-meta" / f"{p.name}.json").exists()
                   and not (web / "conda-meta" / f"{p.name}.json").exists()
                   and all(os.lstat(analysis / f).st_nlink == 2 for f in package_files(p)))  # cache and analysis
    options = scan_options(workers=1)

    def step(old: Snapshot, targets: set[Target], suspect: frozenset[str]) -> Snapshot:
        layouts = {str(root): discover_root(str(root))}
        return rescan(old, targets, roots=[str(root)], layouts=layouts, options=options, started=time.monotonic(),
                      suspect=suspect).snapshot

    before = full_scan([discover_root(str(root))], options)
    install(web, package)  # web changes ...
    walked = step(before, {Target("env", str(analysis), str(root))}, frozenset())  # ... while analysis is walked
    suspect = frozenset({str(analysis)}) if suspects else frozenset()
    after = step(walked, {Target("env", str(web), str(root))}, suspect)
    remove(web, web / "conda-meta" / f"{package.name}.json")
    shutil.rmtree(package)  # conda clean: analysis holds the last link of each of its files
    cleaned = step(after, {Target("env", str(web), str(root)), Target("pkgs", str(root / "pkgs"), str(root))},
                   frozenset())
    return _unique_bytes(cleaned, analysis), tree_numbers(analysis).unique_bytes


def test_a_tree_walked_while_another_changed_takes_no_delta_twice(tmp_path: Path) -> None:
    """Should fix 1 keeps deltas exact: a batch no longer re-queues what it walked when a change elsewhere came
    in meanwhile; those trees become suspects of the change, walked again when its delta touches them.
    Taken twice, web's delta leaves analysis's copy of the package counted as shared, when it is its own."""
    got, expected = _walked_while_changing(build_fixture_root(tmp_path / "with"), suspects=True)
    assert got == expected
    got, expected = _walked_while_changing(build_fixture_root(tmp_path / "without"), suspects=False)
    assert got < expected  # the hazard is real in this scenario: without suspects the delta counts twice


def test_churn_elsewhere_does_not_rescan_a_finished_batch_again(exporter_cmd: list[str], tmp_path: Path) -> None:
    """Should fix 1, end to end. An env is deleted and a package leaves the cache (a batch that walks the whole
    cache and re-discovers the root) while pip keeps writing into another env without a pause, so events arrive
    during every batch. Before the fix each of them queued that batch again: the cache was walked whole over
    and over while the churn lasted; now once."""
    root = build_fixture_root(tmp_path / "conda")
    bulk = root / "pkgs" / "bulk-1.0-0"  # 20,000 files, so that a walk of the whole cache takes a while
    (bulk / "info").mkdir(parents=True)
    (bulk / "info" / "index.json").write_text("{}")
    for i in range(200):
        (bulk / "data" / str(i)).mkdir(parents=True)
        for j in range(100):
            (bulk / "data" / str(i) / str(j)).write_bytes(b"b")
    running = start(exporter_cmd, root, "--watch.mode", "inotify", "--scan.interval", "0")
    web = root / "envs" / "web"
    scipy = next(p for p in packages(root) if p.name.startswith("scipy"))
    try:
        running.converge("startup")
        shutil.rmtree(root / "envs" / "analysis")
        shutil.rmtree(scipy)  # linked by no env: conda clean --packages
        writes, end = 0, time.monotonic() + 3.0
        while time.monotonic() < end:  # no quiet moment: web's own rescan waits until the churn stops
            (web / "lib" / "python3.11" / "site-packages" / f"churn{writes}").mkdir(parents=True)
            writes += 1
        running.converge(f"the deletions and {writes} new dirs in web")
    finally:
        log = stop(running)
    whole = [line for line in log.splitlines() if re.search(r"rescanned .* 1 whole cache", line)]
    assert len(whole) == 1, whole
