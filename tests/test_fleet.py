"""A fleet: three exporters (three fixture roots standing for three hosts) scraped by one Prometheus through the
file-based service discovery example, which remote-writes to VictoriaMetrics.

- The dashboards' ``$job`` and ``$instance`` variables list all three targets, and every panel query, with
  ``$instance`` set to one host, returns data of that host only, for each host.
- Every panel, variable and rule expression also returns data from VictoriaMetrics' Prometheus-compatible query
  API (fed by remote write only), except the expressions named in :data:`VM_DIFFERS` with the reason.

Real components: the exporter, node_exporter, the Debian ``prometheus`` and ``victoria-metrics`` binaries, all on
127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXPORTER
from tests.e2e_tree import build_root
from tests.exposition import samples
from tests.httpwait import fetch, free_port, poll, start_service, wait_ready
from tests.promserver import (
    RULE_FILES,
    SUBSTITUTIONS,
    Prometheus,
    iter_panels,
    load_dashboards,
    operands,
    shipped_queries,
    start_node_exporter,
    variable_query,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
FILE_SD_EXAMPLE = REPO / "deploy" / "prometheus" / "scrape-file-sd.yml"
HOSTS = 3
DEADLINE = 45.0
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
# Panel targets not checked per exporter host, with the reason.
NOT_PER_HOST = {
    # node_exporter's free space joined to the roots: it carries node_exporter's job and instance, which $job and
    # $instance (the exporters') do not select. It is checked against VictoriaMetrics below.
    "node_filesystem_avail_bytes and on (instance, job, device, mountpoint) node_filesystem:conda_root_holding:info",
}
# Expressions whose answer from VictoriaMetrics differs from Prometheus's, with the reason. Measured with the
# Debian victoria-metrics package 1.79.5 (single-node): none; every expression returns data from both.
VM_DIFFERS: dict[str, str] = {}


@dataclass
class Fleet:
    prometheus: Prometheus
    vm_url: str
    instances: list[str]


def _start_vm(work: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("victoria-metrics")
    assert binary, "victoria-metrics not found: apt-get install victoria-metrics (tests/run does)"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_service(
        [binary, f"-storageDataPath={work / 'vm-data'}", f"-httpListenAddr=127.0.0.1:{port}",
         "-retentionPeriod=1d", "-search.latencyOffset=0s", "-search.disableCache"], log, f"{url}/health")
    return proc, url


def _file_sd_config(targets: list[str], sd_dir: Path) -> list[dict[str, Any]]:
    """The shipped file-SD example with its files glob moved into ``sd_dir`` and short intervals; the targets
    file is written in the shape of deploy/prometheus/targets.json."""
    example = yaml.safe_load(FILE_SD_EXAMPLE.read_text())["scrape_configs"]
    (job,) = example
    (sd,) = job["file_sd_configs"]
    (pattern,) = sd["files"]
    name = Path(pattern).name.replace("*", "-fleet")
    (sd_dir / name).write_text(json.dumps([{"targets": targets, "labels": {"team": "fleet-test"}}]))
    sd["files"] = [str(sd_dir / Path(pattern).name)]
    sd["refresh_interval"] = "1s"
    job.update(scrape_interval="1s", scrape_timeout="1s")
    return [job]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    procs: list[subprocess.Popen[Any]] = []
    logs = []
    prometheus: Prometheus | None = None
    try:
        vm, vm_url = _start_vm(work, work / "vm.log")
        procs.append(vm)
        ports = []
        for host in range(HOSTS):
            root = build_root(work / f"host{host}" / "conda")
            port = free_port()
            log = (work / f"exporter{host}.log").open("w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [EXPORTER, "--root", str(root), "--web.listen-address", f"127.0.0.1:{port}", "--scan.interval",
                 "1", "--scan.workers", "1", "--state.file", str(work / f"host{host}" / "state.json")],
                stdout=log, stderr=subprocess.STDOUT, text=True))
            ports.append(port)
        for proc, port in zip(procs[1:], ports, strict=True):
            wait_ready(proc, port)
        instances = [f"127.0.0.1:{port}" for port in ports]
        sd_dir = work / "targets"
        sd_dir.mkdir()
        remote_write = [{"url": f"{vm_url}/api/v1/write",
                         "queue_config": {"batch_send_deadline": "1s", "max_samples_per_send": 10000}}]
        node, node_port = start_node_exporter(work / "node_exporter.log")
        procs.append(node)
        scrape = [*_file_sd_config(instances, sd_dir),
                  {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}]}]
        prometheus = Prometheus(work, scrape, RULE_FILES,
                                {"remote_write": remote_write})
        yield Fleet(prometheus, vm_url, instances)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        for log in logs:
            log.close()
        shutil.rmtree(work, ignore_errors=True)


def _vm_query(url: str, expr: str) -> list[dict[str, Any]]:
    status, body = fetch(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    reply = json.loads(body)
    assert status == 200 and reply.get("status") == "success", f"VictoriaMetrics: {expr}: {reply}"
    data = reply["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def _for_host(expr: str, job: str, instance: str) -> str:
    """Grafana's substitution with one host selected: $job and $instance set, the rest All."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "instance":
            return re.escape(instance).replace("\\", "\\\\")  # a PromQL string: backslashes doubled
        if name == "job":
            return job
        return SUBSTITUTIONS.get(name, ".*")
    return _VARIABLE.sub(value, expr)


def _panel_targets() -> list[tuple[str, str]]:
    return [(f"{name} '{panel['title']}' {target['refId']}", target["expr"])
            for name, dashboard in load_dashboards().items()
            for panel in iter_panels(dashboard["panels"]) for target in panel.get("targets", [])
            if target["expr"] not in NOT_PER_HOST]


@pytest.fixture(scope="module")
def settled(fleet: Fleet) -> Fleet:
    """Every host scraped twice or more and the recording rules evaluated, in Prometheus and in VictoriaMetrics."""
    prom = fleet.prometheus
    job = "conda-env-exporter"
    poll(lambda: True if len(prom.query(f'count by (instance) (conda_env_unique_bytes{{job="{job}"}})')) == HOSTS
         else None, DEADLINE, "all three hosts scraped")
    poll(lambda: True if len(prom.query('count by (instance) (env:conda_env_bytes:delta1d)')) == HOSTS else None,
         DEADLINE, "growth records for all three hosts")
    poll(lambda: True if len(_vm_query(fleet.vm_url, 'count by (instance) (env:conda_env_bytes:delta1d)'))
         == HOSTS else None, DEADLINE, "the records remote-written to VictoriaMetrics")
    poll(lambda: _vm_query(fleet.vm_url, "node_filesystem:conda_root_holding:info") or None, DEADLINE,
         "node_exporter's filesystems joined to the roots, in VictoriaMetrics")
    return fleet


def test_variables_list_every_host(settled: Fleet) -> None:
    queries = [q for q in shipped_queries() if q.kind == "variable" and q.label in ("job", "instance")]
    assert len(queries) == 6  # job and instance on each of three dashboards
    for query in queries:
        values = {r["metric"][query.label] for r in settled.prometheus.query(query.expr)}
        wanted = {"conda-env-exporter"} if query.label == "job" else set(settled.instances)
        assert values == wanted, f"{query.origin}: {values}"


def test_every_panel_returns_data_for_each_host(settled: Fleet) -> None:
    targets = _panel_targets()
    assert len(targets) >= 60
    missing = []
    for instance in settled.instances:
        for origin, expr in targets:
            result = settled.prometheus.query(_for_host(expr, "conda-env-exporter", instance))
            if not result:
                missing.append(f"{instance} {origin}: {expr}")
            others = {r["metric"]["instance"] for r in result if "instance" in r["metric"]} - {instance}
            assert not others, f"{origin} with $instance={instance} shows {others}"
    assert not missing, "\n".join(missing)


def _queries_for_vm() -> list[tuple[str, str]]:
    out = []
    for query in shipped_queries():
        if query.kind == "alert":  # empty unless firing: each quantity compared must return data
            out += [(f"{query.origin} operand {side}", side) for side in operands(query.expr)
                    if not re.fullmatch(r"[\d.e+-]+", side) and "mode=\"poll\"" not in side]
        else:
            out.append((query.origin, query.expr))
    return out


def test_every_expression_returns_data_from_victoriametrics(settled: Fleet) -> None:
    queries = _queries_for_vm()
    assert len(queries) >= 80
    missing = []
    for origin, expr in queries:
        if expr in VM_DIFFERS:
            continue
        if not _vm_query(settled.vm_url, expr):
            missing.append(f"{origin}: {expr}" + ("" if settled.prometheus.query(expr) else " (nor Prometheus)"))
    assert not missing, "no data from VictoriaMetrics:\n" + "\n".join(missing)
    # and the hosts are all there
    result = _vm_query(settled.vm_url, variable_query('label_values(conda_exporter_build_info, instance)')[0])
    assert {r["metric"]["instance"] for r in result} == set(settled.instances)


def test_per_owner_totals_add_up_across_hosts(settled: Fleet) -> None:
    """The owner records keep their instance, so a site-wide total is one sum by owner over them; it must equal
    the hand-made join of each host's own /metrics (conda_env_unique_bytes by conda_env_info's owner)."""
    expected: dict[str, float] = {}
    for instance in settled.instances:
        text = samples(fetch(f"http://{instance}/metrics")[1])
        owners = {(d["root"], d["env"]): d["owner"] for d in map(dict, text["conda_env_info"])}
        for labels, value in text["conda_env_unique_bytes"].items():
            d = dict(labels)
            owner = owners[(d["root"], d["env"])]
            expected[owner] = expected.get(owner, 0.0) + value
    assert expected
    query = "sum by (owner) (owner:conda_env_unique_bytes:sum)"
    for source, result in (("Prometheus", lambda: settled.prometheus.query(query)),
                           ("VictoriaMetrics", lambda: _vm_query(settled.vm_url, query))):
        def agreed(result: Any = result) -> dict[str, float] | None:
            got = {r["metric"]["owner"]: float(r["value"][1]) for r in result()}
            return got if got == expected else None
        poll(agreed, DEADLINE, f"{source}: per-owner totals over the three hosts = {expected}")
