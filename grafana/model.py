"""Building blocks of the generated dashboards: variables, panels, targets, the grid layout, the JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

SCHEMA_VERSION = 41  # Grafana 12's classic dashboard model
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}
TAG = "conda-env-exporter"
GRID_WIDTH = 24


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel. ``instant`` for stat/bar/table panels showing the latest value."""

    expr: str
    legend: str = ""
    instant: bool = False

    def to_json(self, ref_id: str) -> JSON:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "instant": self.instant,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "refId": ref_id,
        }


@dataclass(frozen=True)
class Panel:
    """A panel before layout: ``kind`` is a Grafana panel type, ``w``/``h`` its size in grid units."""

    kind: str
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "bytes"
    w: int = 12
    h: int = 8
    thresholds: tuple[tuple[str, float | None], ...] = (("green", None),)
    stack: bool = False
    decimals: int | None = None
    mappings: tuple[JSON, ...] = ()
    links: tuple[JSON, ...] = ()


@dataclass(frozen=True)
class Row:
    title: str


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[JSON]
    items: list[Panel | Row] = field(default_factory=list)
    time_from: str = "now-7d"


# Grafana's schema requires text and value in ``current``. An empty value is in no option list, so Grafana picks
# the default Prometheus datasource (or the first option) when the dashboard loads, as it does for a missing one.
NO_CURRENT: JSON = {"text": "", "value": ""}
# Multi-valued variables start on All, which is what Grafana picks first for them anyway.
ALL_CURRENT: JSON = {"selected": True, "text": ["All"], "value": ["$__all"]}


def datasource_variable() -> JSON:
    return {
        "current": dict(NO_CURRENT),
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = True) -> JSON:
    """A variable filled from ``label_values(...)``; multi-valued ones offer All, matched as ``.*``."""
    variable: JSON = {
        "current": dict(ALL_CURRENT if multi else NO_CURRENT),
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


def _field_config(panel: Panel) -> JSON:
    defaults: JSON = {
        "color": {"mode": "thresholds" if panel.kind in ("stat", "bargauge") else "palette-classic"},
        "mappings": list(panel.mappings),
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in panel.thresholds],
        },
        "unit": panel.unit,
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.links:
        defaults["links"] = list(panel.links)
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 30 if panel.stack else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stack else "none"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> JSON:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        return {"colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                "percentChangeColorMode": "standard", "reduceOptions": reduce, "showPercentChange": False,
                "textMode": "auto", "wideLayout": True}
    if panel.kind == "bargauge":
        return {"displayMode": "gradient", "legend": {"calcs": [], "displayMode": "list", "placement": "bottom",
                                                      "showLegend": False},
                "maxVizHeight": 300, "minVizHeight": 16, "minVizWidth": 8, "namePlacement": "auto",
                "orientation": "horizontal", "reduceOptions": reduce, "showUnfilled": True, "sizing": "auto",
                "valueMode": "color"}
    if panel.kind == "table":
        return {"cellHeight": "sm", "frameIndex": 0, "showHeader": True}
    return {"legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "right",
                       "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"}}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    refs = "ABCDEFGHIJ"
    out: JSON = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": _field_config(panel),
        "gridPos": {"h": panel.h, "w": panel.w, "x": x, "y": y},
        "id": panel_id,
        "options": _options(panel),
        "targets": [t.to_json(refs[i]) for i, t in enumerate(panel.targets)],
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "table":  # one row per series, its labels as columns
        for target in out["targets"]:
            target["format"] = "table"
        hidden = {"Time": True, "Value": True, "__name__": True}
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": hidden}}]
    return out


def _layout(items: list[Panel | Row]) -> list[JSON]:
    """Place panels left to right, wrapping at the grid's width; a row starts a new line."""
    panels: list[JSON] = []
    x = y = line_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_height
            panels.append({"collapsed": False, "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                           "id": panel_id, "panels": [], "title": item.title, "type": "row"})
            x, y, line_height = 0, y + 1, 0
            continue
        if x + item.w > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        panels.append(_panel_json(item, panel_id, x, y))
        x += item.w
        line_height = max(line_height, item.h)
    return panels


def render(dashboard: Dashboard) -> JSON:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": dashboard.description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": False, "icon": "external link", "includeVars": True, "keepTime": True,
                   "tags": [TAG], "targetBlank": False, "title": "conda dashboards",
                   "tooltip": "The other conda-env-exporter dashboards, with the same host and time range",
                   "type": "dashboards"}],
        "panels": _layout(dashboard.items),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG, "conda"],
        "templating": {"list": dashboard.variables},
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
    }
