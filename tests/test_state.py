"""Warm restarts: the state file is served at once, only what changed is rescanned, bad files are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from exporter.daemon.state import VERSION, load_state, save_state
from exporter.discover.roots import discover_root
from exporter.expose.exposition import build_registry
from exporter.snapshot.full import full_scan
from exporter.snapshot.store import SnapshotStore
from tests.condaops import pip_install
from tests.exposition import samples
from tests.fixture_tree import build_fixture_root
from tests.httpwait import fetch, free_port, poll, wait_ready
from tests.options import scan_options
from tests.test_daemon import DEADLINE, Running


def exposition_of(snapshot_store: SnapshotStore) -> str:
    text = generate_latest(build_registry(snapshot_store)).decode()
    return "\n".join(line for line in text.splitlines() if line.startswith("conda_") and "exporter" not in line)


def test_state_file_round_trips_every_number(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    state = tmp_path / "state.json"
    save_state(str(state), [str(root)], snapshot, {("env", str(root), str(root)): [[1, 2]]})
    loaded = load_state(str(state), [str(root)])
    assert loaded.result == "ok" and loaded.snapshot is not None
    assert loaded.fingerprints == {("env", str(root), str(root)): [[1, 2]]}
    before, after = SnapshotStore(), SnapshotStore()
    before.publish(snapshot, "startup")
    after.publish(loaded.snapshot, "state")
    assert exposition_of(after) == exposition_of(before)
    assert [len(e.usage.shared) for e in loaded.snapshot.envs] == [len(e.usage.shared) for e in snapshot.envs]
    for walked, read in zip(snapshot.envs, loaded.snapshot.envs, strict=True):  # each column as narrow as it was
        for column in ("ino", "nlink", "found", "blocks"):
            saved, back = getattr(walked.usage.shared, column), getattr(read.usage.shared, column)
            assert back.dtype == saved.dtype and back.tolist() == saved.tolist()


def test_bad_state_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    state = tmp_path / "state.json"
    assert load_state(str(state), [str(root)]).result == "missing"
    save_state(str(state), [str(root)], snapshot, {})
    assert load_state(str(state), ["/somewhere/else"]).result == "roots"
    text = state.read_text()
    state.write_text(text[: len(text) // 2])
    assert load_state(str(state), [str(root)]).result == "corrupt"
    document = json.loads(text)
    document["version"] = 999
    state.write_text(json.dumps(document))
    assert load_state(str(state), [str(root)]).result == "version"
    document["version"] = VERSION
    document["snapshot"] = {"__type__": "os.system", "args": ["id"]}  # only the result types are ever built
    state.write_text(json.dumps(document))
    assert load_state(str(state), [str(root)]).result == "invalid"
    assert not list(tmp_path.glob(".state-*"))  # no temporary file left behind


def start(exporter_cmd: list[str], root: Path, state: Path) -> Running:
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_cmd, "--root", str(root), "--web.listen-address", f"127.0.0.1:{port}", "--watch.debounce",
         "0.2", "--scan.workers", "1", "--state.file", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CONDA")}, "HOME": str(root.parent)},
    )
    wait_ready(proc, port)
    return Running(proc, port, root)


def value(running: Running, name: str, **labels: str) -> float:
    text = fetch(f"http://127.0.0.1:{running.port}/metrics")[1]
    return sum(v for k, v in samples(text).get(name, {}).items() if labels.items() <= dict(k).items())


def stop(running: Running) -> None:
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=5) == 0
    running.proc.communicate()


def test_restart_serves_the_state_and_rescans_only_what_changed(exporter_cmd: list[str], tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir()
    first = start(exporter_cmd, root, state)
    first.converge("the first run")
    assert value(first, "conda_exporter_state_loaded", result="missing") == 1
    stop(first)
    assert state.is_file()  # written on a clean stop

    pip_install(root / "envs" / "web", "while-down", 50_000)  # a change no running exporter saw
    second = start(exporter_cmd, root, state)
    try:
        assert value(second, "conda_exporter_state_loaded", result="ok") == 1
        second.converge("the change made while the exporter was down")
        poll(lambda: True if value(second, "conda_exporter_results_verified") == 1 else None, DEADLINE,
             "the loaded numbers to be verified")
        assert value(second, "conda_exporter_scans_total", trigger="startup") == 0  # no full walk at start
        assert value(second, "conda_exporter_scans_total", trigger="state") >= 2  # the load, then the rescan
    finally:
        stop(second)


def test_truncated_or_foreign_state_means_a_full_scan(exporter_cmd: list[str], tmp_path: Path) -> None:
    root = build_fixture_root(tmp_path / "conda")
    other = build_fixture_root(tmp_path / "other")
    state = tmp_path / "state.json"
    first = start(exporter_cmd, other, state)  # a state file of another root
    stop(first)
    second = start(exporter_cmd, root, state)
    try:
        assert value(second, "conda_exporter_state_loaded", result="roots") == 1
        second.converge("a full scan after refusing another root's state")
    finally:
        stop(second)
    text = state.read_text()
    state.write_text(text[: len(text) // 3])
    third = start(exporter_cmd, root, state)
    try:
        assert value(third, "conda_exporter_state_loaded", result="corrupt") == 1
        assert value(third, "conda_exporter_scans_total", trigger="startup") == 1
        third.converge("a full scan after a truncated state file")
    finally:
        stop(third)
