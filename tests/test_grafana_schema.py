"""The generated dashboards against Grafana's own published JSON Schemas, and the rules of Grafana's dashboard
linter as tests over every panel.

Schemas: tests/schemas/grafana/ (copied from grafana-foundation-sdk, provenance and licence in its README). The
dashboard model is validated whole; each panel's ``options`` and ``fieldConfig.defaults.custom`` against its panel
type's schema; each target against the Prometheus query schema. The one place the schema is stricter than Grafana
at run time is documented at :data:`DATA_LINK`.

Linter rules (those of grafana/dashboard-linter, checked here rather than by the tool, which is not installable):
a ``datasource`` variable used by every panel and target; ``job`` and ``instance`` variables and matchers in every
selector; ``$__rate_interval`` in every ``rate``/``irate``/``increase``; a unit on every panel; a title and a
description on every panel; counters only inside ``rate``/``irate``/``increase``; every query parses as PromQL, as
judged by a real Prometheus (``/api/v1/query`` on an empty server: 2.42 has no ``/api/v1/parse_query``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.promserver import (
    Prometheus,
    iter_panels,
    load_dashboards,
    metric_names,
    shipped_queries,
    substitute,
    variable_query,
)

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "grafana"
DASHBOARDS = load_dashboards()
PANEL_TYPES = ("stat", "bargauge", "table", "timeseries")

# THE ONE EXCEPTION. The dashboard schema types a field's ``links`` (fieldConfig.defaults.links, the data links
# a click on a value follows) as DashboardLink, which requires the dashboard-link-only keys type, icon, tooltip,
# tags, asDropdown, includeVars and keepTime. Grafana's run-time type for them is DataLink (packages/grafana-data/
# src/types/dataLink.ts: title and url required, targetBlank optional; variables such as ${__field.labels.env} in
# the url), which ignores those keys; the published schemas hold no DataLink definition. So field links are
# checked against DataLink's shape below, and the rest of the panel against Grafana's schema unchanged.
DATA_LINK: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["title", "url"],
    "properties": {"title": {"type": "string", "minLength": 1}, "url": {"type": "string", "minLength": 1},
                   "targetBlank": {"type": "boolean"}},
}
COUNTER = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*(?:_total|_bucket|_count|_sum))(?![\w:])")
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\s*\(")
# node_exporter's series carry node_exporter's job and instance, which $job/$instance (the exporter's targets,
# from conda_exporter_build_info) do not list; they are joined to the exporter's roots by the recording rule
# node_filesystem:conda_root_holding:info instead (deploy/prometheus/rules/README.md).
OTHER_EXPORTERS = re.compile(r"^node_")


def _schema(name: str, ref: str | None = None) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    if ref is not None:
        schema = {**schema, "$ref": f"#/definitions/{ref}"}
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(instance)]


def _panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, dashboard in DASHBOARDS.items():
        for panel in iter_panels(dashboard["panels"]):
            if panel["type"] != "row":
                yield name, panel


def _targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, panel in _panels():
        for target in panel["targets"]:
            yield f"{name} '{panel['title']}' {target['refId']}", panel, target


def _without_data_links(dashboard: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A copy of the dashboard with every field's data links taken out, and those links."""
    copy = json.loads(json.dumps(dashboard))
    links: list[Any] = []
    for panel in iter_panels(copy["panels"]):
        links.extend(panel.get("fieldConfig", {}).get("defaults", {}).pop("links", []))
    return copy, links


# ---- Grafana's schema ----

@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_model_validates(name: str) -> None:
    dashboard, links = _without_data_links(DASHBOARDS[name])
    assert not _errors(_schema("dashboard"), dashboard), _errors(_schema("dashboard"), dashboard)
    link_validator = jsonschema.Draft7Validator(DATA_LINK)
    for link in links:
        assert not _errors(link_validator, link), (name, link)


def test_the_schema_catches_what_it_should() -> None:
    """Control: the shapes the dashboards used to have (variables with ``current: {}``, a dashboard link
    without a tooltip) fail the copied schema, so passing it means something."""
    dashboard = json.loads(json.dumps(_without_data_links(DASHBOARDS["conda-overview.json"])[0]))
    dashboard["templating"]["list"][0]["current"] = {}
    del dashboard["links"][0]["tooltip"]
    errors = _errors(_schema("dashboard"), dashboard)
    assert any("'text' is a required property" in e for e in errors), errors
    assert any("'tooltip' is a required property" in e for e in errors), errors
    assert len(links := _without_data_links(DASHBOARDS["conda-overview.json"])[1]) >= 1
    assert _errors(_schema("dashboard", "DashboardLink"), links[0]), "the exception above is still needed"


def test_panel_options_and_custom_field_config_validate() -> None:
    seen = set()
    for name, panel in _panels():
        assert panel["type"] in PANEL_TYPES, f"{name}: no schema copied for panel type {panel['type']}"
        seen.add(panel["type"])
        errors = _errors(_schema(panel["type"], "Options"), panel["options"])
        assert not errors, f"{name} '{panel['title']}' options: {errors}"
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if panel["type"] in ("timeseries", "table"):
            assert panel["type"] != "timeseries" or custom is not None
            if custom is not None:
                errors = _errors(_schema(panel["type"], "FieldConfig"), custom)
                assert not errors, f"{name} '{panel['title']}' fieldConfig.defaults.custom: {errors}"
        else:
            assert custom is None, f"{name} '{panel['title']}': {panel['type']} has no custom field config"
    assert seen == set(PANEL_TYPES)


def test_targets_validate_as_prometheus_queries() -> None:
    validator = _schema("prometheus")
    for origin, _, target in _targets():
        assert not _errors(validator, target), (origin, _errors(validator, target))


# ---- the dashboard linter's rules ----

@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variable_used_by_every_panel_and_target(name: str) -> None:
    variables = DASHBOARDS[name]["templating"]["list"]
    assert [v for v in variables if v["name"] == "datasource" and v["type"] == "datasource"
            and v["query"] == "prometheus"]
    for origin, panel, target in _targets():
        if origin.startswith(name):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, origin
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, origin


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_job_and_instance_variables_and_matchers(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert variables["job"]["type"] == variables["instance"]["type"] == "query"
    assert variables["job"]["multi"] and variables["instance"]["multi"]
    for origin, _, target in _targets():
        if not origin.startswith(name):
            continue
        for metric in metric_names(target["expr"]) - {"le"}:
            if OTHER_EXPORTERS.match(metric):
                continue
            for match in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])\s*(\{{[^}}]*\}})?", target["expr"]):
                matchers = match.group(1) or ""
                assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, (
                    f"{origin}: {match.group(0)} lacks the job/instance matchers")


def test_rate_interval_in_every_range_function() -> None:
    count = 0
    for origin, _, target in _targets():
        for match in RANGE_FUNCTION.finditer(target["expr"]):
            count += 1
            window = re.match(r"[^\[]*\[([^\]]*)\]", target["expr"][match.end():])
            assert window and window.group(1) == "$__rate_interval", f"{origin}: {match.group(1)} without " \
                f"[$__rate_interval]: {target['expr']}"
    assert count >= 3


def test_counters_only_inside_rate_or_increase() -> None:
    count = 0
    for origin, _, target in _targets():
        expr = target["expr"]
        for match in COUNTER.finditer(expr):
            count += 1
            assert re.search(r"\b(?:rate|irate|increase)\s*\(\s*$", expr[:match.start()]), (
                f"{origin}: counter {match.group(1)} used outside rate/increase: {expr}")
    assert count >= 4


def test_every_panel_has_title_description_and_unit() -> None:
    for name, panel in _panels():
        assert panel.get("title", "").strip(), f"{name}: panel {panel['id']} has no title"
        assert len(panel.get("description", "").strip()) >= 20, f"{name} '{panel['title']}': no description"
        # every panel type used shows numbers (the table shows conda_env_info's value column hidden, but
        # Grafana still formats it): each needs a unit
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{name} '{panel['title']}' has no unit"


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with Prometheus(tmp_path_factory.mktemp("prom-parse"), [], []) as prometheus:
        yield prometheus


def _parse_error(prometheus: Prometheus, expr: str) -> str | None:
    try:
        prometheus.api("query", query=expr)
    except AssertionError as error:
        return str(error)
    return None


def test_every_query_parses_as_promql(empty_prometheus: Prometheus) -> None:
    """Panel targets and variable queries (variables substituted as Grafana would with All selected, the
    label_values() form turned into the PromQL Grafana runs for it). An empty server evaluates nothing, so any
    error is a parse or type error."""
    assert _parse_error(empty_prometheus, 'sum(rate(x{job=~".*"}[1m])') is not None, "control: must fail"
    assert _parse_error(empty_prometheus, "rate(conda_root_bytes)") is not None, "control: type error"
    queries = [q for q in shipped_queries() if q.kind in ("panel", "variable")]
    assert len(queries) >= 50
    failures = [f"{q.origin}: {err}" for q in queries if (err := _parse_error(empty_prometheus, q.expr))]
    assert not failures, "\n".join(failures)
    # the substitution leaves no Grafana variable behind
    for name, dashboard in DASHBOARDS.items():
        for variable in dashboard["templating"]["list"][1:]:
            assert "$" not in variable_query(substitute(variable["query"]))[0], name
