"""compose and Prometheus configs against the repo and a real Prometheus; YAML style; the Deploy guide."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployrun import (
    COMPOSE_DIR,
    DOCKERFILE,
    PORT,
    RULES_DIR,
    Running,
    assert_serves,
    tool,
)
from tests.deploytools import (
    DEPLOY,
    REPO,
    Container,
    container_of,
)
from tests.httpwait import fetch, free_port, poll

# ---------------------------------------------------------------- compose and Prometheus configs


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host source, container target, read-only) of the short-syntax bind mounts (not named volumes)."""
    out = []
    for spec in service.get("volumes", []):
        source = spec[: spec.index("}") + 1] if spec.startswith("${") else spec.split(":")[0]
        parts = [source, *spec[len(source) + 1 :].split(":")]
        target = parts[1]
        if source.startswith((".", "/", "${")):
            out.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def container_path_to_repo(service: dict[str, Any], path: str) -> Path | None:
    """Where a path inside the container comes from in the repo, through the service's bind mounts."""
    for source, target, _ in bind_mounts(service):
        if (path == target or path.startswith(target.rstrip("/") + "/")) and source.startswith("."):
            return (COMPOSE_DIR / source / os.path.relpath(path, target)).resolve()
    return None


def test_compose_services_mounts_and_ports() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        for source, _target, _ro in bind_mounts(svc):
            if source.startswith("${"):
                continue
            assert (COMPOSE_DIR / source).resolve().exists(), f"{name}: bind mount {source} missing in the repo"
        for spec in svc.get("volumes", []):
            if not spec.startswith((".", "/", "${")):
                assert spec.split(":")[0] in doc["volumes"], f"{name}: named volume {spec} not declared"
    exporter = services["exporter"]
    assert (COMPOSE_DIR / exporter["build"]["context"] / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE
    (root_mount,) = [m for m in bind_mounts(exporter) if m[0].startswith("${")]
    assert root_mount[1] == container_of(DOCKERFILE).env["CONDA_EXPORTER_ROOTS"] and root_mount[2], root_mount
    assert any(p.endswith(f":{PORT}:{PORT}") for p in exporter["ports"])
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]
    state_dir = str(Path(container_of(DOCKERFILE).env["CONDA_EXPORTER_STATE_FILE"]).parent)
    assert any(v.split(":")[1] == state_dir for v in exporter["volumes"]), "state file on a volume"


def test_compose_prometheus_loads_every_rule_file_and_scrapes_the_exporter() -> None:
    services = compose()["services"]
    prom = services["prometheus"]
    config_path = container_path_to_repo(prom, "/etc/prometheus/prometheus.yml")
    assert config_path == COMPOSE_DIR / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    loaded: set[Path] = set()
    for pattern in config["rule_files"]:
        repo_pattern = container_path_to_repo(prom, pattern)
        assert repo_pattern is not None, f"rule_files {pattern} is not under a bind mount"
        loaded |= set(repo_pattern.parent.glob(repo_pattern.name))
    assert loaded == set(RULES_DIR.glob("*.yml")) and loaded
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert f"exporter:{PORT}" in targets


ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def test_compose_prometheus_sends_alerts_to_the_stacks_alertmanager() -> None:
    services = compose()["services"]
    alertmanager = services["alertmanager"]
    flags = dict(arg.split("=", 1) for arg in alertmanager["command"])
    assert container_path_to_repo(alertmanager, flags["--config.file"]) == ALERTMANAGER_CONFIG
    assert any(v.split(":")[1] == flags["--storage.path"] for v in alertmanager["volumes"]), "silences on a volume"
    assert any(p.endswith(":9093:9093") for p in alertmanager["ports"])
    assert "alertmanager" in services["prometheus"]["depends_on"]
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def test_alertmanager_config_passes_amtool_and_fits_the_rules() -> None:
    """amtool's own check, then the config against the rules: a route per severity the rules use, grouping and
    inhibition on labels the alerts carry, the inhibition's target covering every other alert of the project."""
    proc = subprocess.run([tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    rules = _alert_rules()
    severities = {r["labels"]["severity"] for r in rules}
    routed = {m.split("=", 1)[1].strip('"') for route in config["route"]["routes"] for m in route["matchers"]
              if m.startswith("severity=")}
    assert severities == routed == {"critical", "warning", "info"}
    assert {"instance", "root"} <= set(config["route"]["group_by"])
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="CondaExporterDown"']
    assert "CondaExporterDown" in {r["alert"] for r in rules}
    assert inhibit["equal"] == ["instance"]
    target = re.fullmatch(r'alertname=~"(.+)"', inhibit["target_matchers"][0])
    assert target and 'alertname!="CondaExporterDown"' in inhibit["target_matchers"]
    for rule in rules:
        assert re.fullmatch(target.group(1), rule["alert"]), f"{rule['alert']} is not inhibited"
    # amtool's routing tree sends each severity to a receiver that exists
    receivers = {r["name"] for r in config["receivers"]}
    for severity in severities:
        proc = subprocess.run([tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                               f"severity={severity}", "alertname=CondaEnvGrowingFast"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() in receivers, proc.stdout + proc.stderr


def test_compose_grafana_provisioning_points_into_the_stack() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    provisioning = container_path_to_repo(grafana, "/etc/grafana/provisioning")
    assert provisioning == REPO / "grafana" / "provisioning"
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers, "no dashboard provider in grafana/provisioning/dashboards"
    for provider in providers:
        folder = container_path_to_repo(grafana, provider["options"]["path"])
        assert folder == REPO / "grafana" / "dashboards", f"provider path {provider['options']['path']}"
    datasources = [
        d
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    prometheus_ds = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus_ds, "no Prometheus data source provisioned"
    for ds in prometheus_ds:
        url = urllib.parse.urlsplit(ds["url"])
        assert url.hostname == "prometheus" and url.port == 9090, f"{ds['url']} is not the compose service"


def promtool_check_config(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def test_prometheus_scrape_examples_pass_promtool(tmp_path: Path) -> None:
    static = yaml.safe_load((DEPLOY / "prometheus" / "scrape-static.yml").read_text())
    proc = promtool_check_config(static, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # file SD: point the example at a copy of targets.json, which promtool then reads and checks too
    targets = json.loads((DEPLOY / "prometheus" / "targets.json").read_text())
    assert targets and all(re.fullmatch(r"[\w.-]+:\d+", t) for group in targets for t in group["targets"])
    sd = yaml.safe_load((DEPLOY / "prometheus" / "scrape-file-sd.yml").read_text())
    (files_glob,) = sd["scrape_configs"][0]["file_sd_configs"][0]["files"]
    sd_dir = tmp_path / "targets"
    sd_dir.mkdir()
    shutil.copy(DEPLOY / "prometheus" / "targets.json", sd_dir / Path(files_glob).name.replace("*", ""))
    sd["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(sd_dir / Path(files_glob).name)]
    proc = promtool_check_config(sd, tmp_path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.slow
def test_compose_prometheus_config_scrapes_a_real_exporter(
    container_run: tuple[Container, Running, int], small_root: Path, tmp_path: Path
) -> None:
    """The compose stack's prometheus.yml and rules, loaded by a real Prometheus, scraping the exporter started
    as the container starts it: the target is up and every rule group is loaded."""
    _, run, port = container_run
    assert_serves(run, port, small_root)
    prom_service = compose()["services"]["prometheus"]
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    rules = [str(container_path_to_repo(prom_service, p)) for p in config["rule_files"]]
    config["rule_files"] = rules
    for job in config["scrape_configs"]:
        for sc in job.get("static_configs", []):
            sc["targets"] = [f"127.0.0.1:{port}" if t == f"exporter:{PORT}" else t for t in sc["targets"]]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "conda-env-exporter"]
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    prom_port = free_port()
    prom = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{prom_port}/api/v1"
    try:

        def target_up() -> bool | None:
            status, body = fetch(f"{base}/query?query=" + urllib.parse.quote('up{job="conda-env-exporter"}'))
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return True if result and result[0]["value"][1] == "1" else None

        poll(target_up, 40, "up{job=conda-env-exporter} == 1", interval=0.25)
        status, body = fetch(f"{base}/rules")
        loaded = {g["name"] for g in json.loads(body)["data"]["groups"]}
        expected = {g["name"] for f in RULES_DIR.glob("*.yml") for g in yaml.safe_load(f.read_text())["groups"]}
        assert status == 200 and loaded == expected
    finally:
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()


# ---------------------------------------------------------------- YAML style


def test_yamllint_clean() -> None:
    files = sorted(
        str(p)
        for base in (DEPLOY, REPO / "grafana" / "provisioning")
        for p in base.rglob("*")
        if p.suffix in (".yml", ".yaml") and p.is_file()
    )
    assert len(files) >= 10
    config = REPO / ".yamllint.yaml"
    assert config.exists(), "the project's yamllint config is missing"
    how = ["-c", str(config)]
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", *how, *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_deploy_readme_has_one_command_per_path() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    text = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "docker run",
        "-v /opt/conda:/conda:ro",
        "systemctl enable --now conda-env-exporter",
        "kubectl apply -k deploy/kubernetes/daemonset",
        "kubectl apply -k deploy/kubernetes/deployment",
        "docker compose -f deploy/compose/docker-compose.yml up",
        "scrape-static.yml",
        "scrape-file-sd.yml",
        "scrape-secure.yml",
        "kubectl apply -k deploy/kubernetes/secure",
        "deploy/systemd/secure.conf",
    ):
        assert needle in text, needle
