"""Alerts from a real exporter to a person: a real exporter (the daemon, over a fixture root that changes), a
real Prometheus evaluating the project's recording rules and alerts, the shipped Alertmanager config in a real
Alertmanager, and a webhook receiver in the test.

What is changed, and how:
- Thresholds: through the thresholds mechanism, a site's own copy of thresholds.yml with a lower
  ``conda:threshold:env_growth_bytes_per_day`` (as the rules' README tells a site to do).
- ``for:`` durations: Prometheus reads them only from rule text and they are minutes long, so the test's
  copy of alerts.yml sets every ``for`` to 0s; the test asserts that nothing else of any alert differs.
- Alertmanager: the receiver URL and group timings (see tests/test_alert_delivery.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.condaops import pip_install
from tests.deployrun import EXPORTER, RULES_DIR, clean_env
from tests.fixture_tree import build_fixture_root
from tests.httpwait import free_port, poll, wait_ready
from tests.promserver import Prometheus
from tests.test_alert_delivery import Webhook, alertmanager

__all__ = ["alertmanager"]

DEADLINE = 60.0
GROWTH = 3 * 1024 * 1024  # bytes written into one env; the site's threshold below is 1 MiB a day


def site_rules(workdir: Path) -> list[Path]:
    """The shipped rule files as a site would load them, with the changes the module docstring names."""
    workdir.mkdir()
    thresholds = yaml.safe_load((RULES_DIR / "thresholds.yml").read_text())
    lowered = 0
    for group in thresholds["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == "conda:threshold:env_growth_bytes_per_day":
                rule["expr"], lowered = "vector(1024 * 1024)", lowered + 1
    assert lowered == 1
    shipped = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    fast = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    for group in fast["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    strip = [{k: v for k, v in r.items() if k != "for"} for g in shipped["groups"] for r in g["rules"]]
    assert strip == [{k: v for k, v in r.items() if k != "for"} for g in fast["groups"] for r in g["rules"]]
    files = {"thresholds.yml": thresholds, "alerts.yml": fast}
    for name, doc in files.items():
        (workdir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (workdir / "recording.yml").write_text((RULES_DIR / "recording.yml").read_text())
    return [workdir / name for name in ("thresholds.yml", "recording.yml", "alerts.yml")]


class Exporter:
    """The exporter daemon over ``root`` on a fixed port, restartable."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log, self.port = root, log, free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**clean_env(), "CONDA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{self.port}"}
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([str(EXPORTER), "--root", str(self.root), "--scan.workers", "1",
                                          "--watch.debounce", "0.2"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, text=True)
        wait_ready(self.proc, self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    running = Exporter(build_fixture_root(tmp_path / "conda"), tmp_path / "exporter.log")
    running.start()
    yield running
    running.stop()


@pytest.mark.slow
def test_growth_alert_reaches_the_webhook_then_exporter_down_then_resolved(
    exporter: Exporter, alertmanager: tuple[str, Webhook], tmp_path: Path
) -> None:
    url, webhook = alertmanager
    am_target = url.removeprefix("http://")
    scrape = {"job_name": "conda-env-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}
    alerting: dict[str, Any] = {"alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_target]}]}]}}
    (tmp_path / "prom").mkdir()
    with Prometheus(tmp_path / "prom", [scrape], site_rules(tmp_path / "rules"), extra_config=alerting) as prom:
        prom.wait_for('conda_env_unique_bytes{env="web"}', DEADLINE, "the exporter's env metrics")
        prom.wait_for('conda:threshold:env_growth_bytes_per_day == 1048576', DEADLINE, "the site's threshold")
        pip_install(exporter.root / "envs" / "web", "bigdata", GROWTH)  # the env grows fast
        growth = poll(lambda: [a for a in webhook.alerts("firing", "CondaEnvGrowingFast")
                               if a["labels"].get("env") == "web"] or None, DEADLINE,
                      "CondaEnvGrowingFast for env web at the webhook")[0]
        labels, notes = growth["labels"], growth["annotations"]
        assert labels["root"] == str(exporter.root) and labels["prefix"] == str(exporter.root / "envs" / "web")
        assert labels["severity"] == "warning" and labels["instance"] == f"127.0.0.1:{exporter.port}"
        owner = Path(exporter.root / "envs" / "web").owner()
        assert f"owner: {owner}" in " ".join(notes["description"].split()), notes["description"]
        assert "1MiB" in notes["description"].replace(" ", ""), notes["description"]  # the site's threshold
        assert notes["runbook"] and "var-env=web" in notes["dashboard"].replace(" ", "")

        exporter.stop()  # the host's exporter dies
        down = poll(lambda: webhook.alerts("firing", "CondaExporterDown") or None, DEADLINE,
                    "CondaExporterDown at the webhook")[0]
        assert down["labels"]["instance"] == f"127.0.0.1:{exporter.port}" and down["annotations"]["runbook"]

        exporter.start()  # back: the resolved notification follows
        poll(lambda: webhook.alerts("resolved", "CondaExporterDown") or None, DEADLINE,
             "CondaExporterDown resolved at the webhook")
