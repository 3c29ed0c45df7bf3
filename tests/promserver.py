"""A real Prometheus (and node_exporter) for tests, and the PromQL this project ships.

- :class:`Prometheus` runs the Debian ``prometheus`` binary on 127.0.0.1 with a temporary data dir and answers
  instant queries through the HTTP API.
- :func:`shipped_queries` collects every PromQL expression of the dashboards (panel targets, variable queries)
  and of the rule files, with Grafana's template variables substituted.
- :func:`metric_names` and :func:`operands` take expressions apart (well enough for the expressions we ship).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.httpwait import fetch, free_port, poll, start_service

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))

# What Grafana would put in place of its variables when everything is selected.
SUBSTITUTIONS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """One shipped expression: where it comes from and the PromQL to run."""

    origin: str
    expr: str
    kind: str  # "panel", "variable", "record" or "alert"
    label: str = ""  # for variables: the label whose values the variable lists


def substitute(expr: str) -> str:
    """Replace Grafana variables: built-ins by a typical value, dashboard variables by "match anything"."""
    return _VARIABLE.sub(lambda m: SUBSTITUTIONS.get(m.group(1) or m.group(2), ".*"), expr)


def variable_query(query: str) -> tuple[str, str]:
    """PromQL and label for a Grafana Prometheus variable query: label_values(sel, label) lists the label's
    values among the series of ``sel``; anything else is run as it is."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        return query, ""
    selector = match["selector"] or "{__name__=~\".+\"}"
    return f"count by ({match['label']}) ({selector})", match["label"]


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def load_rules() -> list[tuple[str, dict[str, Any]]]:
    """(file name, rule) for every rule of every rule file."""
    return [(path.name, rule) for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def shipped_queries() -> list[Query]:
    queries: list[Query] = []
    for name, dashboard in load_dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            raw = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            expr, label = variable_query(substitute(raw))
            queries.append(Query(f"{name} variable ${variable['name']}", expr, "variable", label))
        for panel in iter_panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                origin = f"{name} panel {panel['id']} '{panel['title']}' target {target['refId']}"
                queries.append(Query(origin, substitute(target["expr"]), "panel"))
    for file_name, rule in load_rules():
        kind = "alert" if "alert" in rule else "record"
        queries.append(Query(f"{file_name} {kind} {rule.get('alert') or rule['record']}", rule["expr"], kind))
    return queries


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are neither functions, keywords nor labels)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", text)
    return {n for n in names if n.lower() not in _KEYWORDS}


_SET_OPS = re.compile(r"\s(?:and|or|unless)\s")
_COMPARISONS = re.compile(r"==|!=|>=|<=|>|<")
_MODIFIERS = re.compile(r"^\s*(?:bool\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:(?:group_left|group_right)\s*"
                        r"(?:\([^)]*\))?\s*)?")


def _split_top_level(expr: str, separator: re.Pattern[str]) -> list[str]:
    """Split on ``separator`` where it is outside (), {}, [] and strings."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'":
            end = _STRINGS.match(expr, i)
            i = end.end() if end else i + 1
            continue
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif depth == 0 and (match := separator.match(expr, i)):
            parts.append(expr[start:i])
            i = start = match.end()
            continue
        i += 1
    parts.append(expr[start:])
    return [_MODIFIERS.sub("", p).strip() for p in parts]


def operands(expr: str) -> list[str]:
    """The sides of an alert's top-level set operations and comparisons: ``a > b and c < 1`` gives a, b, c, 1.
    An alert is empty while it does not fire, but each measured quantity in it must return data."""
    return [side for part in _split_top_level(expr, _SET_OPS) for side in _split_top_level(part, _COMPARISONS)]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Prometheus:
    """A Prometheus server on 127.0.0.1 with its data in ``workdir``; stop() it (or use it as a context)."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]], rule_files: list[Path],
                 extra_config: dict[str, Any] | None = None) -> None:
        """``extra_config``: more top-level sections of prometheus.yml (remote_write, alerting, ...)."""
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: apt-get install prometheus (tests/run does)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                  "rule_files": [str(p) for p in rule_files], "scrape_configs": scrape_configs,
                  **(extra_config or {})}
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc = start_service(
            [binary, f"--config.file={config_file}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            self.log, f"{self.url}/-/ready")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus's error."""
        status, body = fetch(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {reply.get('errorType')}: {reply.get('error')}")
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a scalar result counts as one sample unless it is NaN."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [] if math.isnan(float(data["result"][1])) else [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, deadline: float, what: str) -> list[dict[str, Any]]:
        """Poll until the query returns something."""
        return poll(lambda: self.query(expr) or None, deadline, what, interval=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_node_exporter(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """node_exporter with only its filesystem collector, every filesystem type included (a CI container's
    root may be overlay, which node_exporter skips by default)."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    assert binary, "node_exporter not found: apt-get install prometheus-node-exporter"
    port = free_port()
    proc = start_service(
        [binary, "--collector.disable-defaults", "--collector.filesystem",
         "--collector.filesystem.fs-types-exclude=^(proc|sysfs|cgroup2?|devpts|mqueue|nsfs|tracefs)$",
         f"--web.listen-address=127.0.0.1:{port}"], log, f"http://127.0.0.1:{port}/metrics", 15)
    return proc, port
