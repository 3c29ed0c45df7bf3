"""Kubernetes manifests against the Kubernetes and Prometheus Operator schemas, and with each other."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

from tests.deployrun import (
    DOCKERFILE,
    K8S,
    K8S_VERSIONS,
    PORT,
    RULES_DIR,
    SCHEMAS,
    assert_known_env_vars,
)
from tests.deploytools import (
    REPO,
    container_of,
)

# ---------------------------------------------------------------- Kubernetes


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def test_kubernetes_manifests_validate_against_schemas() -> None:
    checked = 0
    for path, doc in k8s_docs():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: not in the Kubernetes schemas, checked below
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{path.relative_to(REPO)} ({doc['kind']}) vs {version}: {exc}") from None
        checked += 1
    assert checked >= 4  # ServiceAccount, Service, DaemonSet, Deployment


def crd_validator(kind: str) -> Any:
    """The Prometheus Operator CRD's schema for ``kind`` (tests/schemas: see its $comment for provenance)."""
    schema = json.loads((SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text())

    def python_regex(node: Any) -> None:  # Go's RE2 takes "^(?i)x", Python's re only "(?i)^x"
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                node["pattern"] = re.sub(r"^\^\(\?([a-z]+)\)", r"(?\1)^", node["pattern"])
            for value in node.values():
                python_regex(value)
        elif isinstance(node, list):
            for value in node:
                python_regex(value)

    python_regex(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_prometheus_operator_objects_validate_against_crd_schemas() -> None:
    """ServiceMonitor and PrometheusRule against the operator's v0.80.1 CRD schemas (types, duration
    patterns, required fields), strict: an unknown field is an error."""
    kinds = []
    for path, doc in k8s_docs():
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in crd_validator(doc["kind"]).iter_errors(doc)]
        assert not errors, f"{path.relative_to(REPO)}: {errors}"
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["PrometheusRule", "ServiceMonitor"]


def test_crd_schemas_reject_what_the_operator_rejects() -> None:
    monitor = yaml.safe_load((K8S / "common" / "servicemonitor.yaml").read_text())
    validator = crd_validator("ServiceMonitor")
    assert validator.is_valid(monitor)
    for broken in ("interval", "scrapeTimeoutt", "selector"):
        bad = json.loads(json.dumps(monitor))
        if broken == "interval":
            bad["spec"]["endpoints"][0]["interval"] = "1 minute"
        elif broken == "selector":
            del bad["spec"]["selector"]
        else:
            bad["spec"]["endpoints"][0][broken] = "10s"
        assert not validator.is_valid(bad), broken
    rule = yaml.safe_load((K8S / "common" / "prometheusrule.yaml").read_text())
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert not crd_validator("PrometheusRule").is_valid(rule)


def test_kubernetes_objects_agree_with_each_other_and_the_image() -> None:
    docs = {(d["kind"], p.parent.name): d for p, d in k8s_docs()}
    service = docs[("Service", "common")]
    monitor = docs[("ServiceMonitor", "common")]
    container_image = container_of(DOCKERFILE)
    uid = int(container_image.user.split(":")[0])
    port_names = {p["name"]: p for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"] and "metrics" in port_names
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for kind, variant in (("DaemonSet", "daemonset"), ("Deployment", "deployment")):
        workload = docs[(kind, variant)]
        pod = workload["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == uid
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
        res = container["resources"]
        assert res["requests"]["memory"] and res["limits"]["memory"] and res["requests"]["cpu"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert_known_env_vars(env, f"{kind} env")
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert env["CONDA_EXPORTER_ROOTS"] == mounts["conda"]["mountPath"] and mounts["conda"]["readOnly"] is True
        conda_volume = volumes["conda"]
        assert (
            conda_volume.get("hostPath") if kind == "DaemonSet" else conda_volume["persistentVolumeClaim"]["readOnly"]
        )
        # every path the exporter writes is a volume (the root filesystem is read-only)
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert str(Path(env["CONDA_EXPORTER_STATE_FILE"]).parent) in writable and "/tmp" in writable
        (cport,) = container["ports"]
        assert cport["containerPort"] == int(PORT) and cport["name"] == port_names["metrics"]["targetPort"]
        assert env["CONDA_EXPORTER_WEB_LISTEN_ADDRESS"] == f":{PORT}"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_kustomizations_list_every_manifest() -> None:
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        kust = yaml.safe_load(kfile.read_text())
        listed = {(kfile.parent / r).resolve() for r in kust["resources"]}
        for target in listed:
            assert target.exists(), f"{kfile}: {target} missing"
        here = {p.resolve() for p in kfile.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert here <= listed, f"{kfile}: not listed: {sorted(here - listed)}"
    assert {p.parent.name for p in K8S.rglob("kustomization.yaml")} == {"common", "daemonset", "deployment", "secure"}


def test_prometheusrule_is_up_to_date_with_the_rule_files() -> None:
    script = K8S / "build_prometheusrule.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # independently of the script: the manifest's groups are the rule files' groups, in file order
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert rule_files, "no rule files in deploy/prometheus/rules"
    groups = [g for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]]
    manifest = yaml.safe_load((K8S / "common" / "prometheusrule.yaml").read_text())
    assert manifest["spec"]["groups"] == groups


def test_prometheusrule_check_fails_when_stale(tmp_path: Path) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text((K8S / "common" / "prometheusrule.yaml").read_text().replace("expr: ", "expr: 1 + ", 1))
    script = K8S / "build_prometheusrule.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--check", "--output", str(stale)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "stale" in proc.stderr


