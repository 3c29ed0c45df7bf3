"""The container's health probe (``python -m exporter.expose.probe``), run as the HEALTHCHECK runs it: a
subprocess given only CONDA_EXPORTER_* variables, against a real server on a real socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deployrun import clean_env
from tests.httpwait import free_port
from tests.test_webconfig import HASH, pki, serve, tls_config

__all__ = ["pki", "serve"]


def run_probe(port: int, web_config: Path | None) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "CONDA_EXPORTER_WEB_LISTEN_ADDRESS": f":{port}"}  # empty host: the probe uses loopback
    if web_config is not None:
        env["CONDA_EXPORTER_WEB_CONFIG_FILE"] = str(web_config)
    return subprocess.run([sys.executable, "-m", "exporter.expose.probe"], env=env, capture_output=True,
                          text=True, timeout=30)


def test_probe_passes_on_plain_http(serve: Any, tmp_path: Path) -> None:
    server = serve({})
    proc = run_probe(server.port, None)
    assert proc.returncode == 0 and "ok" in proc.stderr, proc.stderr


def test_probe_speaks_tls_and_takes_a_401_from_basic_auth_as_serving(serve: Any, pki: Any, tmp_path: Path) -> None:
    server = serve({**tls_config(pki), "basic_auth_users": {"scraper": HASH}})
    proc = run_probe(server.port, tmp_path / "web.yml")  # the file the serve fixture wrote
    assert proc.returncode == 0 and "basic auth" in proc.stderr, proc.stderr
    # without the web config the probe speaks plain HTTP to the TLS port, which must not pass
    plain = run_probe(server.port, None)
    assert plain.returncode == 1, plain.stderr


def test_probe_takes_a_refused_client_certificate_as_serving(serve: Any, pki: Any, tmp_path: Path) -> None:
    server = serve(tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_crt))
    proc = run_probe(server.port, tmp_path / "web.yml")
    assert proc.returncode == 0 and "client certificate" in proc.stderr, proc.stderr


def test_probe_fails_when_nothing_answers_or_the_config_is_bad(tmp_path: Path) -> None:
    proc = run_probe(free_port(), None)
    assert proc.returncode == 1 and "no answer" in proc.stderr, proc.stderr
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config: {cert_fil: x}\n")
    proc = run_probe(free_port(), bad)
    assert proc.returncode == 1 and "cert_fil" in proc.stderr, proc.stderr
