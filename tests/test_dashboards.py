"""Structural checks of the Grafana dashboards (no Grafana server is installable here; Grafana's published JSON
Schemas and its dashboard linter's rules are checked in test_grafana_schema.py).

What Grafana needs to load them as provisioned files, and what makes them usable on a Prometheus shared by
several hosts: unique ids, a grid without overlaps, every query through the ``$datasource`` variable, every
variable defined before use, IEC byte units, a description on every panel. Whether each query runs and returns
data is checked against a real Prometheus in test_prometheus_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from grafana.generate import OUT_DIR, generated
from grafana.model import DATASOURCE, GRID_WIDTH, SCHEMA_VERSION
from tests.promserver import iter_panels, load_dashboards

DASHBOARDS = load_dashboards()
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__field", "__url_time_range"}
REQUIRED_VARIABLES = {
    "conda-overview.json": ["datasource", "job", "instance", "root", "env", "owner"],
    "conda-env-detail.json": ["datasource", "job", "instance", "root", "env"],
    "conda-exporter-health.json": ["datasource", "job", "instance"],
}
SELECTOR = r"[a-zA-Z_:][\w:]*(\{[^{}]*\})?"
# a selector of the exporter's series, of a record made from them, or of the exporter's scrape
EXPORTER_SELECTOR = re.compile(
    r"(?<![\w:])((?:conda_|(?:root|env|owner|pkgs_dir):conda_|up\b|scrape_)[\w:]*)(\{[^}]*\})?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(iter_panels(dashboard["panels"]))


def _variables_used(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(text)}


def _balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:\\.|[^"\\])*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_committed_json_is_what_the_generator_writes() -> None:
    wanted = generated()
    assert sorted(wanted) == sorted(p.name for p in OUT_DIR.glob("*.json"))
    for name, text in wanted.items():
        assert (OUT_DIR / name).read_text() == text, f"{name} is stale: run python -m grafana.generate"


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    assert set(DASHBOARDS) == set(REQUIRED_VARIABLES)
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_dashboard_top_level(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert dashboard["schemaVersion"] == SCHEMA_VERSION >= 39
    assert dashboard["id"] is None, "provisioned dashboards must not carry a database id"
    assert dashboard["title"] and dashboard["description"]
    assert "conda-env-exporter" in dashboard["tags"]
    assert "__inputs" not in dashboard, "the datasource comes from the variable, not from an import input"


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_panel_ids_unique_and_grid_valid(name: str) -> None:
    panels = _panels(DASHBOARDS[name])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert all(isinstance(v, int) for v in grid.values())
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, f"panel {panel['id']} is wider than the grid"
        boxes.append((panel["id"], grid))
    for (id_a, a), (id_b, b) in itertools.combinations(boxes, 2):
        overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                   and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
        assert not overlap, f"panels {id_a} and {id_b} overlap"


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_panels_query_through_the_datasource_variable(name: str) -> None:
    for panel in _panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip() and _balanced(target["expr"]), f"{panel['title']}: {target['expr']}"
    # no hard-coded datasource uid anywhere in the file
    uids = re.findall(r'"uid": "([^"]*)"', json.dumps(DASHBOARDS[name]))
    assert set(uids) <= {"${datasource}", "-- Grafana --", DASHBOARDS[name]["uid"]}, uids


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_panels_explain_themselves_and_set_units(name: str) -> None:
    for panel in _panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            continue
        assert len(panel["description"]) >= 40, f"{panel['title']}: describe it for a user"
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit, f"{panel['title']} has no unit"
        assert unit != "decbytes", f"{panel['title']}: bytes are shown in IEC units (unit 'bytes')"
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if re.search(r"_bytes\b|_bytes:|:[a-z_]*bytes", exprs) and "/" not in exprs:
            assert unit == "bytes", f"{panel['title']} shows bytes with unit {unit}"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), f"{panel['title']}: thresholds out of order"


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_variables(name: str) -> None:
    dashboard = DASHBOARDS[name]
    variables = dashboard["templating"]["list"]
    names = [v["name"] for v in variables]
    assert names == REQUIRED_VARIABLES[name]
    datasource = variables[0]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    defined = {"datasource"}
    for variable in variables[1:]:
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        query = variable["query"]
        assert variable["definition"] == query
        match = re.fullmatch(rf"label_values\((?P<selector>{SELECTOR}),\s*(?P<label>\w+)\)", query)
        assert match, f"${variable['name']}: not label_values(selector, label): {query}"
        assert match["label"] == variable["name"], "a variable lists the values of its own label"
        assert _balanced(query)
        undefined = _variables_used(query) - defined
        assert not undefined, f"${variable['name']} uses variables defined after it: {undefined}"
        if variable["multi"]:
            assert variable["includeAll"] and variable["allValue"] == ".*"
        defined.add(variable["name"])
    used = set().union(*(_variables_used(json.dumps(p.get("targets", []))) for p in _panels(dashboard)))
    assert used - BUILTIN_VARIABLES <= defined, f"panels use undefined variables: {used - defined}"
    # every variable but datasource filters some panel (job/instance everywhere, root/env/owner where listed)
    assert defined - {"datasource"} <= used


@pytest.mark.parametrize("name", sorted(REQUIRED_VARIABLES))
def test_exporter_series_are_filtered_by_host(name: str) -> None:
    """On a Prometheus shared by several hosts, every selector of the exporter's series honours $job and
    $instance (node_exporter's series are joined to the roots by the recording rule instead)."""
    for panel in _panels(DASHBOARDS[name]):
        for target in panel.get("targets", []):
            for selector in EXPORTER_SELECTOR.finditer(target["expr"]):
                matchers = selector.group(2) or ""
                assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, (
                    f"{name} '{panel['title']}': {selector.group(0)} is not filtered by $job and $instance")
