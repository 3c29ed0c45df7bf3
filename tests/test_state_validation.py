"""Hostile state files (issue 18, item 5): each is refused before it is served, with the reason in
``conda_exporter_state_loaded{result}`` and one log line; a full scan runs and every scrape answers 200 with
the oracle's numbers. Every file here is a real file on disk; nothing is mocked.

The fault before: a file with wrong field types was accepted, and then every scrape answered 500; a 300 MB
file was read whole (640 MB peak); a deeply nested one raised out of the parser.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter.daemon.state import MAX_BYTES, MAX_DEPTH, load_state, max_depth, save_state
from exporter.discover.roots import discover_root
from exporter.snapshot.full import full_scan
from tests.fixture_tree import build_fixture_root
from tests.options import scan_options
from tests.test_daemon import Running, start, stop
from tests.test_state import value

Mutation = Callable[[Any], None]


def _first(node: Any, key: str) -> dict[str, Any]:
    """The first object (depth first) holding ``key``: the mutations name a field, not a path, so they hit
    the same field whatever wrapping the format puts around objects."""
    if isinstance(node, dict):
        if key in node:
            return node
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        children = []
    for child in children:
        found = _first(child, key)
        if found:
            return found
    return {}


def _setter(key: str, new: object) -> Mutation:
    def mutate(document: Any) -> None:
        holder = _first(document, key)
        assert holder, f"no {key!r} in the state file"
        holder[key] = new

    return mutate


def _table(columns: dict[str, tuple[str, list[int]]]) -> Mutation:
    """Replace the columns of the first shared-inode table with these (dtype name, values)."""

    def mutate(document: Any) -> None:
        holder = _first(document, "ino")
        assert holder, "no shared-inode table in the state file"
        for key, (dtype, values) in columns.items():
            holder[key] = f"{dtype}:{base64.b64encode(np.array(values, dtype=dtype).tobytes()).decode()}"

    return mutate


WRONG_TYPES: dict[str, Mutation] = {
    "a string where a number goes": _setter("unique_bytes", "12345"),
    "a list where an object goes": _setter("contents", [1, 2, 3]),
    "an object where a string goes": _setter("prefix", {"a": 1}),
    "a negative size": _setter("apparent_bytes", -4096),
    "a count past 2**64": _setter("files", 2**70),
    "a time that is not finite": _setter("scanned_at", "INFINITE"),  # written as 1e999, which decodes to inf
    "a column of the wrong byte length": _setter("ino", "uint64:AAAA"),  # base64 of 3 bytes: no uint64 column
    "a column that is not base64": _setter("nlink", "uint8:not base64!"),
    "a column without its dtype": _setter("ino", "AAAAAAAAAAA="),  # 8 bytes, as format 4 wrote them
    "a dtype its field does not allow": _setter("ino", "uint32:AAAAAA=="),  # inode numbers are uint64
    "a signed dtype where counts go": _setter("nlink", "int64:AQAAAAAAAAA="),
    "a float dtype where counts go": _setter("blocks", "float64:AAAAAAAA8D8="),
    "a dtype numpy would parse": _setter("found", "O:AAAAAAAAAAA="),
    "an object of another class": _setter("usage", {"__type__": "os.system", "args": ["id"]}),
    "inodes not sorted": _table({"ino": ("uint64", [5, 3]), "nlink": ("uint8", [2, 2]), "found": ("uint8", [1, 1]),
                                 "blocks": ("uint8", [8, 8])}),
    "inodes repeated": _table({"ino": ("uint32", [5, 5]), "nlink": ("uint8", [2, 2]), "found": ("uint8", [1, 1]),
                               "blocks": ("uint8", [8, 8])}),
}


def fixture_state(tmp_path: Path) -> tuple[Path, Path, Any]:
    """A fixture root, a good state file for it, and that file parsed."""
    root = build_fixture_root(tmp_path / "conda")
    snapshot = full_scan([discover_root(str(root))], scan_options(workers=1))
    state = tmp_path / "state.json"
    save_state(str(state), [str(root)], snapshot, {})
    return root, state, json.loads(state.read_text())


@pytest.mark.parametrize("mutation", list(WRONG_TYPES), ids=list(WRONG_TYPES))
def test_wrong_types_and_values_are_refused(tmp_path: Path, mutation: str, caplog: pytest.LogCaptureFixture) -> None:
    root, state, document = fixture_state(tmp_path)
    WRONG_TYPES[mutation](document)
    state.write_text(json.dumps(document).replace('"INFINITE"', "1e999"))
    assert load_state(str(state), [str(root)]).result == "invalid"
    refusals = [r for r in caplog.records if "ignoring state file" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "WARNING"


def test_unknown_top_level_fields_are_refused(tmp_path: Path) -> None:
    root, state, document = fixture_state(tmp_path)
    document["extra"] = {"anything": 1}
    state.write_text(json.dumps(document))
    assert load_state(str(state), [str(root)]).result == "invalid"


def test_a_good_file_still_loads(tmp_path: Path) -> None:
    root, state, _ = fixture_state(tmp_path)
    assert load_state(str(state), [str(root)]).result == "ok"


def _sparse_state(path: Path, size: int) -> None:
    """A state file of ``size`` bytes that starts like a real one, without writing ``size`` bytes to disk."""
    with path.open("wb") as handle:
        handle.write(b'{"format":"conda-env-exporter-state","version":3,"roots":[],"snapshot":"')
        handle.truncate(size)


def _peak_rss_loading(path: Path) -> int:
    """Peak resident bytes of a fresh interpreter that imports the loader and loads ``path``."""
    code = ("import resource, sys; from exporter.daemon.state import load_state; "
            "print(load_state(sys.argv[1], []).result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout.split()
    return int(out[1]) * 1024


def test_a_300_mb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    huge, small = tmp_path / "huge.json", tmp_path / "small.json"
    _sparse_state(huge, 300 * 1024 * 1024)
    _sparse_state(small, 1024)
    assert load_state(str(huge), []).result == "too_large"
    # Reading it would take 300 MB at least; refusing it from fstat costs nothing over loading a tiny file.
    assert _peak_rss_loading(huge) - _peak_rss_loading(small) < 16 * 1024 * 1024


def test_a_file_at_the_bound_is_read_and_one_past_it_is_not(tmp_path: Path) -> None:
    at, past = tmp_path / "at.json", tmp_path / "past.json"
    _sparse_state(at, MAX_BYTES)
    _sparse_state(past, MAX_BYTES + 1)
    assert load_state(str(at), []).result == "corrupt"  # read and parsed: NUL bytes are no JSON
    assert load_state(str(past), []).result == "too_large"


def test_a_fifo_is_not_opened_for_ever(tmp_path: Path) -> None:
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    assert load_state(str(fifo), []).result == "corrupt"  # returns at once: no writer ever comes


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 1_000_000])
def test_deep_nesting_is_refused_before_parsing(tmp_path: Path, depth: int) -> None:
    root, state, document = fixture_state(tmp_path)
    document["snapshot"]["errors"] = "NESTED"
    nested = "[" * depth + "]" * depth  # written as text: json.dumps would recurse
    state.write_text(json.dumps(document).replace('"NESTED"', nested))
    assert load_state(str(state), [str(root)]).result == "too_deep"


def test_depth_ignores_brackets_inside_strings() -> None:
    assert max_depth(b'{"a":"[[[[{{{\\"[[[","b":[1,[2]]}') == 3
    assert max_depth(b"7") == 0
    assert max_depth(b"[" * 3_000_000 + b"]" * 3_000_000) == 3_000_000


def _deep(document: Any) -> str:
    document["snapshot"]["errors"] = "NESTED"
    return json.dumps(document).replace('"NESTED"', "[" * 5_000 + "]" * 5_000)


def _mutated(key: str, new: object) -> Callable[[Path, Any], None]:
    def write(path: Path, document: Any) -> None:
        _setter(key, new)(document)
        path.write_text(json.dumps(document))

    return write


BAD_FILES: dict[str, tuple[str, Callable[[Path, Any], object]]] = {
    "string-for-number": ("invalid", _mutated("unique_bytes", "12345")),
    "list-for-object": ("invalid", _mutated("contents", [1])),
    "negative-size": ("invalid", _mutated("shared_bytes", -4096)),
    "huge": ("too_large", lambda path, _: _sparse_state(path, 300 * 1024 * 1024)),
    "deep": ("too_deep", lambda path, document: path.write_text(_deep(document))),
}


def launch(exporter_cmd: list[str], root: Path, state: Path) -> Running:
    return start(exporter_cmd, root, "--state.file", str(state))


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_the_daemon_refuses_and_scans_in_full(exporter_cmd: list[str], tmp_path: Path, case: str) -> None:
    root = build_fixture_root(tmp_path / "conda")
    state = tmp_path / "state.json"
    first = launch(exporter_cmd, root, state)  # writes a real state file, fingerprints and all, on stop
    first.converge("the first run")
    stop(first)
    reason, write = BAD_FILES[case]
    write(state, json.loads(state.read_text()))  # nothing changed on disk: a file accepted is never rescanned
    running = launch(exporter_cmd, root, state)
    try:
        running.converge(f"a full scan after refusing the {case} state file")  # status 200, oracle numbers
        assert value(running, "conda_exporter_state_loaded", result=reason) == 1
        assert value(running, "conda_exporter_scans_total", trigger="startup", result="success") == 1
        assert value(running, "conda_exporter_results_verified") == 1
    finally:
        log = stop(running)
    assert sum("ignoring state file" in line for line in log.splitlines()) == 1, log
