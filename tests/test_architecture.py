"""The tree shows the pipeline: each stage imports only earlier stages, modules and classes stay small,
and no two modules share a name. Read from the source with ``ast``, not from a list kept by hand."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "exporter"

# What each part of the package may import from the package. The stages in pipeline order, each seeing
# the earlier ones; the daemon and expose sit side by side after the snapshot and never import each
# other; the command line (cli, demo, __main__) wires everything.
SHARED = {"exporter", "model", "config"}
STAGES = ["discover", "scan", "account", "snapshot"]
ALLOWED: dict[str, set[str]] = {"model": {"exporter", "config"}, "config": {"exporter"}}
for i, stage in enumerate(STAGES):
    ALLOWED[stage] = SHARED | set(STAGES[: i + 1])
ALLOWED["daemon"] = SHARED | set(STAGES) | {"daemon"}
ALLOWED["expose"] = SHARED | set(STAGES) | {"expose"}
TOP = {"cli", "demo", "__main__", "__init__"}

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 150


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def part_of(path: Path) -> str:
    """``scan`` for exporter/scan/walk.py, ``model`` for exporter/model.py."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path) -> set[str]:
    """The parts of the package that ``path`` imports (``exporter`` alone for ``from exporter import x``
    of a plain attribute such as ``__version__``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "exporter" else [f"exporter.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "exporter":
                top = parts[1] if len(parts) > 1 else "exporter"
                found.add("exporter" if top == "__version__" else top)
    return found


def test_every_part_has_a_rule() -> None:
    parts = {part_of(p) for p in modules()}
    assert parts - TOP <= set(ALLOWED), parts - TOP - set(ALLOWED)
    assert set(STAGES) | {"expose", "daemon", "model"} <= parts


def test_no_import_runs_against_the_pipeline() -> None:
    wrong = []
    for path in modules():
        part = part_of(path)
        if part in TOP:
            continue
        for imported in imported_parts(path) - ALLOWED[part]:
            wrong.append(f"{path.relative_to(PACKAGE)} imports exporter.{imported}")
    assert wrong == []


def test_modules_and_classes_stay_small() -> None:
    big = []
    for path in modules():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    big.append(f"{path.relative_to(PACKAGE)}: class {node.name}, {lines} lines")
    assert big == []


def test_no_two_modules_share_a_name() -> None:
    names = Counter(p.stem for p in modules() if p.stem != "__init__")
    assert [name for name, count in names.items() if count > 1] == []


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an import of a later stage is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("from exporter.snapshot.store import SnapshotStore\nimport exporter.expose.server\n")
    assert imported_parts(bad) == {"snapshot", "expose"}
    assert imported_parts(bad) - ALLOWED["scan"] == {"snapshot", "expose"}
