"""Alert delivery from Alertmanager on: the shipped deploy/alertmanager/alertmanager.yml in a real Alertmanager
(Debian ``prometheus-alertmanager``), notifying a webhook receiver served by this test.

Only the receiver's URL and the group timings are changed (to this test's webhook, and seconds instead of
minutes); routes, grouping and the inhibition are the shipped ones. Alerts are posted to Alertmanager's API as
Prometheus posts them, with the labels and annotations the rules give them.

The whole path, from a real exporter through a real Prometheus evaluating the project's rules to this
Alertmanager, is tests/test_alert_e2e.py, which uses this module's Alertmanager and webhook.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.httpwait import fetch, free_port, poll, start_service

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "alertmanager" / "alertmanager.yml"
DEADLINE = 30.0


class Webhook:
    """An HTTP server on 127.0.0.1 recording every notification Alertmanager posts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with owner.lock:
                    owner.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/conda-alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str, alertname: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for n in self.received for a in n["alerts"]
                    if a["status"] == status and a["labels"]["alertname"] == alertname]


def _test_config(webhook_url: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook_url
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="0s", group_interval="1s", repeat_interval="1h")
    return config


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Webhook]]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager not found: apt-get install prometheus-alertmanager (tests/run does)"
    work = tmp_path_factory.mktemp("alertmanager")
    webhook = Webhook()
    config = work / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_test_config(webhook.url)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_service([binary, f"--config.file={config}", f"--storage.path={work / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                         work / "alertmanager.log", f"{url}/-/ready")
    try:
        yield url, webhook
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        webhook.server.shutdown()


def _post(url: str, *alerts: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(list(alerts)).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def _alert(name: str, severity: str, instance: str, ends: datetime | None = None, **labels: str) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "severity": severity, "instance": instance, "job": "conda-env-exporter",
                   **labels},
        "annotations": {"summary": f"{name} on {instance}", "runbook": "see the rules' runbook"},
        "startsAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def test_firing_alert_reaches_the_webhook_with_its_labels(alertmanager: tuple[str, Webhook]) -> None:
    url, webhook = alertmanager
    growth = _alert("CondaEnvGrowingFast", "warning", "host-a:9867", root="/opt/conda", env="big",
                    prefix="/opt/conda/envs/big")
    _post(url, growth)
    (got, *_) = poll(lambda: webhook.alerts("firing", "CondaEnvGrowingFast") or None, DEADLINE,
                     "CondaEnvGrowingFast at the webhook")
    assert got["labels"] == growth["labels"] and got["annotations"] == growth["annotations"]


def test_exporter_down_inhibits_the_instances_other_alerts_and_resolves(alertmanager: tuple[str, Webhook]) -> None:
    url, webhook = alertmanager
    down = _alert("CondaExporterDown", "warning", "host-b:9867")
    stale_b = _alert("CondaExporterResultsStale", "warning", "host-b:9867")
    stale_c = _alert("CondaExporterResultsStale", "warning", "host-c:9867")
    _post(url, down)
    poll(lambda: webhook.alerts("firing", "CondaExporterDown") or None, DEADLINE, "CondaExporterDown at the webhook")
    _post(url, stale_b, stale_c)
    # another instance's alert is delivered; the down instance's one is held back as inhibited by Alertmanager
    poll(lambda: [a for a in webhook.alerts("firing", "CondaExporterResultsStale")
                  if a["labels"]["instance"] == "host-c:9867"] or None, DEADLINE, "host-c's alert at the webhook")

    def inhibited() -> list[str] | None:
        status, body = fetch(f"{url}/api/v2/alerts?filter=alertname%3D%22CondaExporterResultsStale%22"
                             "&filter=instance%3D%22host-b%3A9867%22")
        alerts = json.loads(body) if status == 200 else []
        return alerts[0]["status"]["inhibitedBy"] if alerts and alerts[0]["status"]["inhibitedBy"] else None

    assert poll(inhibited, DEADLINE, "host-b's alert inhibited by CondaExporterDown")
    assert not [a for a in webhook.alerts("firing", "CondaExporterResultsStale")
                if a["labels"]["instance"] == "host-b:9867"], "an inhibited alert was delivered"
    # the exporter is back: Prometheus sends the alert with an end time; the resolved notification arrives
    _post(url, _alert("CondaExporterDown", "warning", "host-b:9867", ends=datetime.now(UTC)))
    (resolved, *_) = poll(lambda: webhook.alerts("resolved", "CondaExporterDown") or None, DEADLINE,
                          "CondaExporterDown resolved at the webhook")
    assert resolved["labels"]["instance"] == "host-b:9867"
