"""The Prometheus rules: promtool accepts them, their unit tests pass, and every rule is covered by one."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import Any

import yaml

from tests.promserver import REPO, RULE_FILES, RULES_DIR, load_rules

RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))
README = RULES_DIR / "README.md"
SEVERITIES = {"critical", "warning", "info"}
PROMTOOL = shutil.which("promtool") or "promtool"  # tests/run installs Debian's prometheus, which has it


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)


def _alerts() -> list[dict[str, Any]]:
    return [rule for _, rule in load_rules() if "alert" in rule]


def _records() -> list[dict[str, Any]]:
    return [rule for _, rule in load_rules() if "record" in rule]


def _unit_tests() -> list[dict[str, Any]]:
    return [case for path in RULE_TESTS for case in yaml.safe_load(path.read_text())["tests"]]


def test_promtool_check_rules() -> None:
    result = _run(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no rule unit tests found"
    result = _run(PROMTOOL, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_unit_tests_load_every_rule_file() -> None:
    loaded = {(path.parent / f).resolve() for path in RULE_TESTS
              for f in yaml.safe_load(path.read_text())["rule_files"]}
    assert {p.resolve() for p in RULE_FILES} <= loaded


def test_every_alert_is_tested_firing_and_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in _unit_tests():
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), f"alerts never tested firing: {sorted(names - fires)}"
    assert names - silent == set(), f"alerts never tested silent: {sorted(names - silent)}"


def test_every_recording_rule_is_tested() -> None:
    tested = {check["expr"].strip() for case in _unit_tests() for check in case.get("promql_expr_test", [])}
    untested = {rule["record"] for rule in _records()} - tested
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_alerts_have_severity_and_annotations() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert len(annotations.get(key, "")) > 20, f"{rule['alert']}: annotation {key} missing or too short"
        assert rule["alert"].startswith("Conda"), rule["alert"]


def test_thresholds_live_in_one_place() -> None:
    """Alerts compare against conda:threshold:* records (or 0/1 states), never against their own numbers."""
    thresholds = {rule["record"] for rule in _records() if rule["record"].startswith("conda:threshold:")}
    threshold_file = yaml.safe_load((RULES_DIR / "thresholds.yml").read_text())
    assert thresholds == {r["record"] for g in threshold_file["groups"] for r in g["rules"]}
    used: set[str] = set()
    for rule in _alerts():
        expr = re.sub(r'"[^"]*"|\[[^\]]*\]', "", rule["expr"])  # label values and range windows are not thresholds
        literals = {float(n) for n in re.findall(r"(?<![\w.:])\d+(?:\.\d+)?(?:e\d+)?(?![\w.])", expr)}
        assert literals <= {0.0, 1.0}, f"{rule['alert']} has a threshold of its own: {literals}"
        used |= set(re.findall(r"conda:threshold:\w+", rule["expr"]))
    assert used == thresholds, f"thresholds no alert uses: {sorted(thresholds - used)}"


def test_readme_documents_every_threshold_and_alert() -> None:
    text = README.read_text()
    names = [r["record"] for r in _records() if r["record"].startswith("conda:threshold:")]
    names += [r["alert"] for r in _alerts()]
    missing = [name for name in names if name not in text]
    assert not missing, f"not documented in {README.relative_to(REPO)}: {missing}"


def test_yaml_is_lint_clean() -> None:
    paths = [RULES_DIR, REPO / "grafana" / "provisioning"]
    result = _run(sys.executable, "-m", "yamllint", "--strict", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_names_follow_the_convention() -> None:
    """level:metric:operation, and no percentages as metrics (ratios belong in the panels)."""
    for rule in _records():
        assert re.fullmatch(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", rule["record"]), rule["record"]
        assert "percent" not in rule["record"] and "ratio" not in rule["record"], rule["record"]
