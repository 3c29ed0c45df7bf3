"""The deploy files, checked as far as a machine without Docker, Kubernetes or a running systemd allows.

- systemd: ``systemd-analyze verify`` and ``security --offline`` on the unit; the exporter started from the
  unit's own ExecStart=, EnvironmentFile= and Environment= lines and scraped over HTTP.
- Dockerfile: hadolint; its two pip steps replayed in a fresh virtualenv; the exporter started from the
  final stage's ENV + ENTRYPOINT + CMD and probed with the image's own HEALTHCHECK command.
- Kubernetes: every manifest against the bundled Kubernetes schemas (kubernetes-validate, strict), the
  Prometheus Operator kinds against the operator's CRD schemas (tests/schemas), cross-file consistency,
  and the PrometheusRule kept in step with deploy/prometheus/rules.
- compose + Prometheus configs: parsed, mounts and provisioning paths checked against the repo,
  ``promtool check config``, and a real Prometheus loading the compose config scraping a real exporter.
- yamllint over every YAML file of deploy/ and grafana/provisioning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

from tests.deploytools import (
    DEPLOY,
    REPO,
    Container,
    container_of,
    copy_build_context,
    expand_exec,
    parse_dockerfile,
    parse_env_file,
    parse_unit,
    unit_environment,
    unit_values,
)
from tests.exposition import samples
from tests.httpwait import fetch, free_port, poll

BIN = Path(sys.executable).parent
EXPORTER = BIN / "conda-env-exporter"
UNIT = DEPLOY / "systemd" / "conda-env-exporter.service"
ENV_FILE = DEPLOY / "systemd" / "conda-env-exporter.env"
DOCKERFILE = REPO / "Dockerfile"
K8S = DEPLOY / "kubernetes"
COMPOSE_DIR = DEPLOY / "compose"
RULES_DIR = DEPLOY / "prometheus" / "rules"
PORT = "9867"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest still-common and newest bundled schemas


def tool(name: str) -> str:
    """A tool from the test venv's bin dir, else PATH; fails (not skips) when missing."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name} not found: tests/run installs it"
    return str(found)


def clean_env() -> dict[str, str]:
    """What a service manager / container runtime starts with: no CONDA_*, no user's HOME."""
    return {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}


# ---------------------------------------------------------------- a small conda root


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conda-meta/, envs/x/conda-meta/ and pkgs/, with one package file hardlinked into env x."""
    root = tmp_path_factory.mktemp("deployroot") / "conda"
    (root / "conda-meta").mkdir(parents=True)
    (root / "conda-meta" / "history").write_text("")
    pkg = root / "pkgs" / "tiny-1.0-0"
    (pkg / "info").mkdir(parents=True)
    (pkg / "lib").mkdir()
    (pkg / "lib" / "tiny.so").write_bytes(b"\x7fELF" + b"t" * 8000)
    env = root / "envs" / "x"
    (env / "conda-meta").mkdir(parents=True)
    (env / "conda-meta" / "history").write_text("")
    (env / "lib").mkdir()
    os.link(pkg / "lib" / "tiny.so", env / "lib" / "tiny.so")
    (env / "lib" / "own.txt").write_bytes(b"o" * 3000)
    return root


def exporter_help() -> str:
    env = {**clean_env(), "COLUMNS": "250"}
    return subprocess.run([str(EXPORTER), "--help"], capture_output=True, text=True, timeout=60, env=env).stdout


def exporter_has_state_file() -> bool:
    return "--state.file" in exporter_help()


def assert_known_env_vars(env: dict[str, str], where: str) -> None:
    """Every CONDA_EXPORTER_* variable a deploy file sets is one the exporter reads: a typo would be ignored."""
    known = set(re.findall(r"CONDA_EXPORTER_[A-Z_]+", exporter_help()))
    known.add("CONDA_EXPORTER_STATE_FILE")  # in the contract; --help lists it once the daemon has it
    unknown = sorted(k for k in env if k.startswith("CONDA_EXPORTER_") and k not in known)
    assert not unknown, f"{where}: not exporter settings: {unknown}"


def substitute(value: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        value = value.replace(old, new)
    return value


class Running:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.argv, self.env = argv, env
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""


def scrape_until_env_seen(run: Running, port: int, root: Path) -> dict[str, Any]:
    """Poll /metrics (deadline, no fixed sleep) until env x of ``root`` is exported."""

    def check() -> dict[str, Any] | None:
        if run.proc.poll() is not None:
            raise AssertionError(f"exporter exited {run.proc.returncode}: {run.stop()}")
        status, body = fetch(f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            return None
        files = samples(body).get("conda_env_files", {})
        for labels, value in files.items():
            if dict(labels).get("env") == "x" and dict(labels).get("root") == str(root):
                return {"body": body, "files": value}
        return None

    return poll(check, 60, f"env x of {root} on :{port}/metrics")


def assert_serves(run: Running, port: int, root: Path) -> None:
    seen = scrape_until_env_seen(run, port, root)
    assert seen["files"] >= 2  # tiny.so (hardlinked from pkgs/) + own.txt
    assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert poll(lambda: True if fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200 else None, 30, "/readyz")


# ---------------------------------------------------------------- systemd


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd'; tests/run installs it)")
    return found


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with only ExecStart='s binary and the EnvironmentFile= moved to paths that exist here."""
    env_copy = tmp_path / "conda-env-exporter.env"
    shutil.copy(ENV_FILE, env_copy)
    text = UNIT.read_text()
    text = text.replace("/opt/conda-env-exporter/bin/conda-env-exporter", str(EXPORTER))
    text = text.replace("/etc/conda-env-exporter/conda-env-exporter.env", str(env_copy))
    out = tmp_path / "conda-env-exporter.service"
    out.write_text(text)
    return out


def test_systemd_unit_verifies_clean(unit_copy: Path) -> None:
    proc = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", unit_copy.name],
        cwd=unit_copy.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values too, printing a warning: any output is a failure
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_systemd_unit_exposure_is_low(unit_copy: Path) -> None:
    # systemd's own hardening score (0 = locked down, 10 = none); --threshold is that score x 10
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager", unit_copy.name],
        cwd=unit_copy.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def test_systemd_unit_has_the_required_hardening() -> None:
    unit = parse_unit(UNIT)
    service = dict(unit["Service"])
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "StateDirectory": "conda-env-exporter",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert re.fullmatch(r"\d+[KMG]", service["MemoryMax"])
    # the state file lives in the StateDirectory (the only writable place under ProtectSystem=strict)
    env = unit_environment(unit, {"S": "/var/lib"})
    assert env["CONDA_EXPORTER_STATE_FILE"].startswith(f"/var/lib/{service['StateDirectory']}/")
    assert unit_values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert_known_env_vars(parse_env_file(ENV_FILE), str(ENV_FILE))


def test_systemd_execstart_serves_the_root(small_root: Path, tmp_path: Path) -> None:
    """Start the exporter as systemd would: ExecStart= argv, EnvironmentFile= + Environment= env."""
    unit = parse_unit(UNIT)
    port = free_port()
    state_base = tmp_path / "var-lib"
    (state_base / "conda-env-exporter").mkdir(parents=True)  # what StateDirectory= creates
    specifiers = {"S": str(state_base), "n": UNIT.name}
    (env_file,) = unit_values(unit, "Service", "EnvironmentFile")
    assert Path(env_file.lstrip("-")).name == ENV_FILE.name
    subs = {"/opt/conda-env-exporter/bin/conda-env-exporter": str(EXPORTER), f":{PORT}": f"127.0.0.1:{port}"}
    file_env = parse_env_file(ENV_FILE)
    assert file_env["CONDA_EXPORTER_ROOTS"] == "/opt/conda"
    file_env["CONDA_EXPORTER_ROOTS"] = str(small_root)
    env = {**clean_env(), **{k: substitute(v, subs) for k, v in file_env.items()}, **unit_environment(unit, specifiers)}
    env["STATE_DIRECTORY"] = str(state_base / "conda-env-exporter")
    (exec_start,) = unit_values(unit, "Service", "ExecStart")
    argv = [substitute(a, subs) for a in expand_exec(exec_start, env, specifiers)]
    assert argv[0] == str(EXPORTER)
    run = Running(argv, env, tmp_path)
    try:
        assert_serves(run, port, small_root)
        if exporter_has_state_file():
            state = Path(env["CONDA_EXPORTER_STATE_FILE"])
            assert state.parent == state_base / "conda-env-exporter"
            poll(lambda: True if state.exists() else None, 30, f"state file {state}")
    finally:
        output = run.stop()
    assert run.proc.returncode == 0, output
    assert "Traceback" not in output, output


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_clean() -> None:
    proc = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    _, stages = parse_dockerfile(DOCKERFILE)
    assert len(stages) >= 2, "multi-stage: build the wheel apart from the runtime"
    assert all(s.base == "python:3.11-slim" for s in stages), [s.base for s in stages]
    container = container_of(DOCKERFILE)
    uid = container.user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "numeric non-root USER, so runAsNonRoot can check it"
    assert container.exposed == [PORT]
    assert "/healthz" in " ".join(container.healthcheck) and container.healthcheck[0] == "python"
    assert container.env["CONDA_EXPORTER_ROOTS"] == "/conda"
    assert_known_env_vars(container.env, "Dockerfile ENV")
    assert Path(container.env["CONDA_EXPORTER_STATE_FILE"]).parent.as_posix() in container.volumes
    final_runs = [i.rest for i in stages[-1].all("RUN") if "pip " in i.rest]
    assert final_runs and all("--no-index" in r for r in final_runs), "the runtime stage must not use the network"
    assert not stages[-1].all("COPY"), "only the wheels reach the runtime stage (through a build mount)"


def test_dockerfile_pip_steps_replayed_in_fresh_venv(tmp_path: Path) -> None:
    """Stage 1's `pip wheel` on the .dockerignore'd context, stage 2's `pip install --no-index` in a new venv."""
    _, stages = parse_dockerfile(DOCKERFILE)
    context = tmp_path / "context"
    copied = copy_build_context(REPO, context)
    assert "pyproject.toml" in copied and "exporter/cli.py" in copied
    assert not any(c.startswith(("tests/", ".venv/", ".git/")) for c in copied), copied
    wheels = tmp_path / "wheels"
    venv = tmp_path / "venv"
    # the runtime stage's fresh interpreter; pip runs from outside it (--python), as ensurepip costs ~5 s
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    steps = [(stage, ins) for stage in stages for ins in stage.all("RUN") if ins.rest.startswith("pip ")]
    assert [s.name for s, _ in steps] == ["build", None], steps
    for stage, ins in steps:
        stage_env: dict[str, str] = {}
        for env_ins in stage.all("ENV"):
            stage_env.update(dict(w.split("=", 1) for w in env_ins.rest.split()))
        stage_env.pop("PIP_NO_CACHE_DIR")  # keeps the image small; here it would only cost time
        if stage.name == "build":  # stage 1 may use an index: this machine's pip configuration
            env, pip = {**os.environ, **stage_env}, f'"{sys.executable}" -m pip'
        else:  # stage 2: no index, no pip config, only the wheels
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            env.update(stage_env, PIP_CONFIG_FILE=os.devnull)
            pip = f'"{sys.executable}" -m pip --python "{venv / "bin" / "python"}"'
        command = pip + ins.rest.removeprefix("pip").replace("/wheels", str(wheels))
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    script = venv / "bin" / "conda-env-exporter"
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--web.listen-address" in proc.stdout, proc.stderr
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import exporter; print(exporter.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), f"imported from {where}, not the installed wheel"


@pytest.fixture
def container_run(small_root: Path, tmp_path: Path) -> Iterator[tuple[Container, Running, int]]:
    """The exporter as `docker run -v ROOT:/conda:ro -v STATE:/var/lib/conda-env-exporter` starts it."""
    container = container_of(DOCKERFILE)
    port = free_port()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    volume = container.volumes[0]
    subs = {volume: str(state_dir), f":{PORT}": f"127.0.0.1:{port}"}
    env = {**clean_env(), **{k: substitute(v, subs) for k, v in container.env.items()}}
    assert env["CONDA_EXPORTER_ROOTS"] == "/conda"
    env["CONDA_EXPORTER_ROOTS"] = str(small_root)  # the bind mount
    argv = [substitute(a, subs) for a in container.argv]
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    assert argv[0] == str(EXPORTER)
    run = Running(argv, env, tmp_path)
    try:
        yield container, run, port
    finally:
        run.stop()


def test_container_cmd_serves_the_root_and_passes_its_healthcheck(
    container_run: tuple[Container, Running, int], small_root: Path
) -> None:
    container, run, port = container_run
    assert_serves(run, port, small_root)
    health = [sys.executable if container.healthcheck[0] == "python" else container.healthcheck[0]]
    health += container.healthcheck[1:]
    ok = subprocess.run(health, env=run.env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    if exporter_has_state_file():
        state = Path(run.env["CONDA_EXPORTER_STATE_FILE"])
        poll(lambda: True if state.exists() else None, 30, f"state file {state}")
    output = run.stop()
    assert run.proc.returncode == 0 and "Traceback" not in output, output
    down = subprocess.run(health, env=run.env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0, "the healthcheck must fail when nothing answers"


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
    assert {p.parent.name for p in K8S.rglob("kustomization.yaml")} == {"common", "daemonset", "deployment"}


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
    assert set(services) == {"exporter", "prometheus", "grafana"}
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
    ):
        assert needle in text, needle
