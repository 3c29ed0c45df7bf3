"""The secure variants of the deploy files: the shipped web config, the systemd drop-in, the Kubernetes overlay
and the https scrape example, each used for real (openssl certificates, systemd-analyze, the Kubernetes and
Operator schemas, a real Prometheus scraping a real exporter with the shipped files)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.expose.webconfig import build_ssl_context, parse_web_config
from tests.deployrun import EXPORTER, K8S, K8S_VERSIONS, UNIT, assert_known_env_vars, clean_env, tool
from tests.deploytools import DEPLOY
from tests.httpwait import free_port
from tests.promserver import Prometheus
from tests.test_deploy_compose import promtool_check_config
from tests.test_deploy_kubernetes import crd_validator

WEB_CONFIG = DEPLOY / "systemd" / "web-config.yml"
DROP_IN = DEPLOY / "systemd" / "secure.conf"
SCRAPE_SECURE = DEPLOY / "prometheus" / "scrape-secure.yml"
OVERLAY = K8S / "secure"
PLACEHOLDER_PASSWORD = "change-me"  # the password whose hash the shipped web config carries (it says so)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    run = [tool("openssl")]

    def openssl(*args: str) -> None:
        subprocess.run([*run, *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=conda-host")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "2", "-extfile", "ext")
    return d


def installed_web_config(certs: Path, where: Path) -> Path:
    """The shipped web config installed as the drop-in does: beside tls.crt and tls.key, unchanged."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        shutil.copy(certs / name, where / name)
    return Path(shutil.copy(WEB_CONFIG, where / "web-config.yml"))


def test_shipped_web_config_parses_and_finds_its_certificate_beside_it(certs: Path, tmp_path: Path) -> None:
    config = parse_web_config(str(installed_web_config(certs, tmp_path / "creds")))
    assert config.tls is not None and config.tls.cert_file == str(tmp_path / "creds" / "tls.crt")
    build_ssl_context(config.tls)  # loads the chain: raises if the relative paths did not resolve
    assert set(config.users) == {"prometheus"}
    assert dict(config.headers)["X-Content-Type-Options"] == "nosniff"


def test_systemd_unit_with_the_secure_drop_in_verifies_clean(certs: Path, tmp_path: Path) -> None:
    """systemd merges a drop-in's [Service] into the unit's: verify the unit with it appended."""
    env_file = tmp_path / "conda-env-exporter.env"
    shutil.copy(DEPLOY / "systemd" / "conda-env-exporter.env", env_file)
    creds = tmp_path / "etc"
    installed_web_config(certs, creds)
    drop_in = DROP_IN.read_text().replace("/etc/conda-env-exporter/", f"{creds}/")
    unit = (UNIT.read_text().replace("/opt/conda-env-exporter/bin/conda-env-exporter", str(EXPORTER))
            .replace("/etc/conda-env-exporter/conda-env-exporter.env", str(env_file)))
    out = tmp_path / "conda-env-exporter.service"
    out.write_text(unit + "\n" + drop_in)
    proc = subprocess.run([tool("systemd-analyze"), "verify", "--man=no", out.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    credentials = [line.split("=", 1)[1] for line in drop_in.splitlines() if line.startswith("LoadCredential=")]
    assert {c.split(":", 1)[0] for c in credentials} == {"web-config.yml", "tls.crt", "tls.key"}
    assert all(Path(c.split(":", 1)[1]).is_file() for c in credentials)
    assert "Environment=CONDA_EXPORTER_WEB_CONFIG_FILE=%d/web-config.yml" in drop_in.splitlines()


@pytest.mark.slow
def test_prometheus_scrapes_with_the_shipped_web_config_and_scrape_example(
    certs: Path, fixture_root: Path, tmp_path: Path
) -> None:
    """Only file locations and the target are substituted in both shipped files."""
    config = installed_web_config(certs, tmp_path / "creds")
    port = free_port()
    env = {**clean_env(), "CONDA_EXPORTER_WEB_CONFIG_FILE": str(config),
           "CONDA_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    with (tmp_path / "exporter.log").open("w") as log:
        proc = subprocess.Popen([str(EXPORTER), "--root", str(fixture_root), "--scan.workers", "1"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        (tmp_path / "password").write_text(PLACEHOLDER_PASSWORD + "\n")
        (tmp_path / "password").chmod(0o600)
        job = yaml.safe_load(SCRAPE_SECURE.read_text())["scrape_configs"][0]
        job["tls_config"]["ca_file"] = str(certs / "ca.crt")
        job["basic_auth"]["password_file"] = str(tmp_path / "password")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        wrong = {**copy.deepcopy(job), "job_name": "wrong-password"}
        wrong["basic_auth"] = {"username": "prometheus", "password": "guess"}
        plain = {"job_name": "plain-http", "scrape_interval": "1s", "scrape_timeout": "1s",
                 "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        with Prometheus(tmp_path, [job, wrong, plain], []) as prom:
            prom.wait_for(f'up{{job="{job["job_name"]}"}} == 1', 60, "the scrape with the shipped files")
            prom.wait_for(f'conda_root_bytes{{job="{job["job_name"]}"}}', 30, "the exporter's metrics")
            prom.wait_for('up{job="wrong-password"} == 0', 30, "the scrape with a wrong password")
            prom.wait_for('up{job="plain-http"} == 0', 30, "plain HTTP to the TLS port")
            assert proc.poll() is None, (tmp_path / "exporter.log").read_text()  # down for its reasons, not dead
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _apply(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Patch (RFC 6902) subset kustomize applies here: add (incl. '-') and replace."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            if op["op"] == "add":
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                node[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in node, f"replace of a missing {op['path']}"
            node[last] = op["value"]
    return out


def overlay_objects() -> dict[str, dict[str, Any]]:
    """The overlay's objects by kind, built as kustomize would: the base's objects with the patches applied."""
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "../daemonset"
    base = yaml.safe_load((K8S / "daemonset" / "kustomization.yaml").read_text())
    objects: dict[str, dict[str, Any]] = {}
    for resource in base["resources"] + [f"../secure/{r}" for r in kustomization["resources"][1:]]:
        path = (K8S / "daemonset" / resource).resolve()
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for f in files:
            if f.name != "kustomization.yaml":
                for doc in yaml.safe_load_all(f.read_text()):
                    objects[doc["kind"]] = doc
    for patch in kustomization["patches"]:
        kind = patch["target"]["kind"]
        assert objects[kind]["metadata"]["name"] == patch["target"]["name"]
        objects[kind] = _apply(objects[kind], yaml.safe_load(patch["patch"]))
    return objects


def test_kubernetes_secure_overlay_validates_and_hangs_together() -> None:
    objects = overlay_objects()
    daemonset, monitor, secret = objects["DaemonSet"], objects["ServiceMonitor"], objects["Secret"]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(daemonset, version, strict=True)
    errors = [e.message for e in crd_validator("ServiceMonitor").iter_errors(monitor)]
    assert not errors, errors
    # the Secret carries the shipped web config verbatim, so both describe one file
    assert secret["stringData"]["web-config.yml"] == WEB_CONFIG.read_text()
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert_known_env_vars(env, "secure overlay")
    config_path = Path(env["CONDA_EXPORTER_WEB_CONFIG_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert "subPath" not in mount  # a subPath mount would never see a renewed certificate
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secrets = [s["secret"]["name"] for s in volume["projected"]["sources"]]
    assert secret["metadata"]["name"] in secrets and "conda-env-exporter-tls" in secrets
    web = yaml.safe_load(secret["stringData"]["web-config.yml"])
    assert {web["tls_server_config"]["cert_file"], web["tls_server_config"]["key_file"]} == {"tls.crt", "tls.key"}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["username"]["key"] == "username"
    assert endpoint["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    for probe in ("livenessProbe", "readinessProbe"):  # basic auth would answer an httpGet probe with 401
        assert "tcpSocket" in container[probe], probe


def test_promtool_accepts_the_secure_scrape_example(tmp_path: Path) -> None:
    config = yaml.safe_load(SCRAPE_SECURE.read_text())
    job = config["scrape_configs"][0]
    assert job["scheme"] == "https" and "tls_config" in job and "basic_auth" in job
    (tmp_path / "ca.crt").write_text("")
    job["tls_config"]["ca_file"] = str(tmp_path / "ca.crt")
    (tmp_path / "password").write_text("x\n")
    job["basic_auth"]["password_file"] = str(tmp_path / "password")
    proc = promtool_check_config(config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
