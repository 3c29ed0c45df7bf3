"""--web.config.file (exporter-toolkit's format) with real certificates and real clients: curl, Python's ssl
and a real Prometheus, over real sockets. Certificates are made here with the openssl CLI."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

import exporter.expose.server
from exporter.expose.app import make_app
from exporter.expose.server import HTTP_THREADS, MetricsServer
from exporter.expose.webguard import RELOADS, Authenticator, WebConfigWatcher
from exporter.snapshot.store import SnapshotStore
from tests.conftest import EXPORTER
from tests.httpwait import free_port, poll
from tests.promserver import Prometheus

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getattr__(self, name: str) -> str:  # pki.ca_crt -> <dir>/ca.crt
        stem, _, ext = name.rpartition("_")
        return str(self.dir / f"{stem}.{ext}")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(pki: Path, name: str, cn: str, san: str, usage: str, *, ca: str = "ca") -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=pki)
    (pki / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=pki)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA; server certs (SAN 127.0.0.1, localhost) 'server' and 'rotated'; client certs 'client' (SAN scraper)
    and 'stranger' (SAN other); 'rogue', a client cert from another CA."""
    assert shutil.which("openssl"), "openssl not found: tests/run installs it"
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                 f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}", cwd=d)
    _issue(d, "server", "server", "IP:127.0.0.1,IP:::1,DNS:localhost", "serverAuth")
    _issue(d, "rotated", "rotated", "IP:127.0.0.1,IP:::1,DNS:localhost", "serverAuth")
    _issue(d, "client", "client", "DNS:scraper", "clientAuth")
    _issue(d, "stranger", "stranger", "DNS:other", "clientAuth")
    _issue(d, "rogue", "rogue", "DNS:scraper", "clientAuth", ca="otherca")
    return Pki(d)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def tls_config(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"tls_server_config": {"cert_file": pki.server_crt, "key_file": pki.server_key, **extra}}


@pytest.fixture
def serve(store: SnapshotStore, tmp_path: Path) -> Iterator[Any]:
    """serve(config) -> a running in-process MetricsServer with that web config."""
    running: list[MetricsServer] = []

    def start(config: dict[str, Any], host: str = "127.0.0.1") -> MetricsServer:
        watcher = WebConfigWatcher(str(write_config(tmp_path / "web.yml", config)))
        server = MetricsServer(make_app(store, "/metrics"), host, 0, web=watcher)
        server.start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def client_context(pki: Pki, cert: str = "", **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_crt)
    for name, version in versions.items():
        setattr(context, name, version)
    if cert:
        context.load_cert_chain(getattr(pki, f"{cert}_crt"), getattr(pki, f"{cert}_key"))
    return context


def get(port: int, context: ssl.SSLContext, path: str = "/metrics", password: str | None = None,
        host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection(host, port, timeout=5, context=context)
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"scraper:{password}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)


def test_tls_basic_auth_and_headers_with_curl(serve: Any, pki: Pki) -> None:
    server = serve({**tls_config(pki), "basic_auth_users": {"scraper": HASH},
                    "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff",
                                                       "Strict-Transport-Security": "max-age=31536000"}}})
    url = f"https://127.0.0.1:{server.port}"
    ok = curl("--cacert", pki.ca_crt, "-u", f"scraper:{PASSWORD}", "-D", "/dev/stderr", f"{url}/metrics")
    assert ok.stdout.endswith("\n200") and "conda_root_bytes" in ok.stdout and "process_cpu_seconds_total" in ok.stdout
    assert "x-content-type-options: nosniff" in ok.stderr.lower() and "strict-transport-security" in ok.stderr.lower()
    unverified = curl("-u", f"scraper:{PASSWORD}", f"{url}/metrics")  # the test CA is not in the system store
    assert unverified.returncode == 60, unverified.stderr
    for path in ("/metrics", "/healthz", "/readyz", "/"):  # every endpoint goes through auth
        for creds in ([], ["-u", "scraper:wrong"], ["-u", f"nobody:{PASSWORD}"]):
            denied = curl("--cacert", pki.ca_crt, *creds, "-D", "/dev/stderr", f"{url}{path}")
            assert denied.stdout.endswith("\n401"), (path, creds, denied.stdout[-200:])
            assert "www-authenticate: basic" in denied.stderr.lower() and "nosniff" in denied.stderr
    assert curl("--cacert", pki.ca_crt, "-u", f"scraper:{PASSWORD}", f"{url}/healthz").stdout == "ok\n\n200"


def test_a_header_the_web_config_sets_replaces_the_pages_own(serve: Any, pki: Pki) -> None:
    """The page sends its own Content-Security-Policy; one set in the web config must replace it, not be sent
    as a second header (a browser applies both, and the stricter one wins)."""
    policy = "default-src 'self'"
    server = serve({**tls_config(pki), "http_server_config": {"headers": {"Content-Security-Policy": policy}}})
    url = f"https://127.0.0.1:{server.port}/"
    answer = curl("--cacert", pki.ca_crt, "-D", "/dev/stderr", url)
    http_status = answer.stdout.rsplit("\n", 1)[-1]
    assert http_status in ("200", "503"), answer.stdout[-200:]  # 503: the page before the first scan
    sent = [line.split(":", 1)[1].strip() for line in answer.stderr.splitlines()
            if line.lower().startswith("content-security-policy:")]
    assert sent == [policy], answer.stderr


def test_plain_http_to_the_tls_port_fails(serve: Any, pki: Pki) -> None:
    server = serve(tls_config(pki))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400 ") and b"HTTP request to an HTTPS server" in answer
    assert b"conda_" not in answer
    assert curl(f"http://127.0.0.1:{server.port}/metrics").stdout.endswith("\n400")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_is_refused_by_the_server_when_min_version_is_tls12(serve: Any, pki: Pki) -> None:
    """The client below does complete TLS 1.1 with a server that allows it (checked by hand against
    ``openssl s_server -tls1_1 -cipher DEFAULT:@SECLEVEL=0``), so the failure is the server's refusal."""
    server = serve(tls_config(pki, min_version="TLS12"))
    old = client_context(pki, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client does offer TLS 1.1
    with pytest.raises(ssl.SSLError) as refused:
        get(server.port, old, "/healthz")
    # the server's alert, not a client that could not even offer TLS 1.1
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(refused.value)
    assert refused.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"), refused.value
    twelve = client_context(pki, minimum_version=ssl.TLSVersion.TLSv1_2, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert get(server.port, twelve, "/healthz")[0] == 200
    server13 = serve(tls_config(pki, min_version="TLS13"))
    with pytest.raises(ssl.SSLError):
        get(server13.port, twelve, "/healthz")


def test_client_certificates_and_allowed_sans(serve: Any, pki: Pki) -> None:
    server = serve(tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_crt,
                              client_allowed_sans=["scraper"]))
    url = f"https://127.0.0.1:{server.port}/metrics"
    ok = curl("--cacert", pki.ca_crt, "--cert", pki.client_crt, "--key", pki.client_key, url)
    assert ok.stdout.endswith("\n200"), ok.stderr
    no_cert = curl("--cacert", pki.ca_crt, url)
    assert no_cert.returncode != 0 and not no_cert.stdout.endswith("\n200")
    rogue = curl("--cacert", pki.ca_crt, "--cert", pki.rogue_crt, "--key", pki.rogue_key, url)
    assert rogue.returncode != 0 and not rogue.stdout.endswith("\n200")  # another CA's certificate
    status, _, body = get(server.port, client_context(pki, cert="stranger"))  # signed by our CA, wrong SAN
    assert status == 403 and b"conda_" not in body
    assert get(server.port, client_context(pki, cert="client"))[0] == 200


def test_a_client_that_never_completes_the_handshake_does_not_block_scrapers(
    serve: Any, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter.expose.server, "SOCKET_TIMEOUT_SECONDS", 0.5)
    server = serve(tls_config(pki))
    # every serving thread held: half by silent TCP connections, half by a handshake started and left hanging
    stuck = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(HTTP_THREADS)]
    for sock in stuck[: HTTP_THREADS // 2]:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello record, then nothing
    assert get(server.port, client_context(pki), "/healthz")[0] == 200  # at once: stuck handshakes hold no thread
    for sock in stuck:
        assert sock.recv(1) == b""  # closed by the server, without an answer
        sock.close()


def _served_cn(port: int, pki: Pki) -> str:
    context = client_context(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert: Any = tls.getpeercert()
    return str(dict(item[0] for item in cert["subject"])["commonName"])


def test_certificate_rotation_without_restart_and_a_bad_reload_keeps_the_last_good(
    serve: Any, pki: Pki, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server_crt, live / "tls.crt")
    shutil.copy(pki.server_key, live / "tls.key")
    server = serve({"tls_server_config": {"cert_file": "live/tls.crt", "key_file": "live/tls.key"}})  # relative
    assert _served_cn(server.port, pki) == "server"
    before = dict(RELOADS)
    for name in ("crt", "key"):  # the way cert-manager or certbot replace them: write aside, rename over
        shutil.copy(getattr(pki, f"rotated_{name}"), live / f"new.{name}")
        os.replace(live / f"new.{name}", live / f"tls.{name}")
    poll(lambda: True if _served_cn(server.port, pki) == "rotated" else None, 10, "the rotated certificate")
    assert RELOADS["success"] > before["success"]

    (live / "tls.key").write_text("not a key\n")
    poll(lambda: True if RELOADS["failure"] > before["failure"] else None, 10, "the failed reload")
    assert _served_cn(server.port, pki) == "rotated"  # still served with the last good config


def test_serves_tls_on_ipv4_and_ipv6_when_the_host_is_empty(serve: Any, pki: Pki) -> None:
    server = serve(tls_config(pki), host="")
    assert get(server.port, client_context(pki), "/healthz")[0] == 200
    try:
        status = get(server.port, client_context(pki), "/healthz", host="::1")[0]
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert status == 200


def test_bcrypt_runs_once_then_the_cache_answers() -> None:
    auth = Authenticator({"scraper": HASH.encode()})
    header = "Basic " + base64.b64encode(f"scraper:{PASSWORD}".encode()).decode()
    assert auth.check(header) and auth.check(header)
    assert not auth.check("Basic " + base64.b64encode(b"scraper:nope").decode())
    assert not auth.check("Basic " + base64.b64encode(f"ghost:{PASSWORD}".encode()).decode())
    assert not auth.check("Bearer x") and not auth.check("Basic !!!")


BAD_CONFIGS: list[tuple[str, Any, str]] = [
    ("missing-file", None, "cannot read"),
    ("bad-yaml", "tls_server_config: [unclosed", "bad YAML"),
    ("unknown-top-key", {"basic_auth_user": {}}, "basic_auth_user: unknown key"),
    ("unknown-nested-key", {"tls_server_config": {"cert_fil": "x"}}, "tls_server_config.cert_fil: unknown key"),
    ("duplicate-user", "basic_auth_users:\n  a: x\n  a: y\n", "duplicate key 'a'"),
    ("unreadable-key-file", "KEY_MISSING", "tls_server_config.key_file: cannot read"),
    ("bad-hash", {"basic_auth_users": {"scraper": "plaintext"}}, "basic_auth_users.scraper: not a bcrypt hash"),
    ("bad-header", {"http_server_config": {"headers": {"Content-Length": "1"}}},
     "http_server_config.headers.Content-Length"),
    ("bad-header-value", {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "X-Frame-Options"),
    ("require-any", "REQUIRE_ANY", "RequireAnyClientCert"),
    ("tls11", "TLS11", "min_version"),
    ("unknown-cipher", "CIPHER", "unknown cipher: TLS_RSA_WITH_RC4_128_SHA"),
    ("ca-without-auth", "CA_NO_AUTH", "client_auth_type"),
]


@pytest.mark.parametrize(("content", "expected"), [(c, e) for _, c, e in BAD_CONFIGS],
                         ids=[i for i, _, _ in BAD_CONFIGS])
def test_a_bad_web_config_is_one_line_and_exit_2(pki: Pki, fixture_root: Path, tmp_path: Path, content: Any,
                                                 expected: str) -> None:
    tls = tls_config(pki)["tls_server_config"]
    special = {
        "KEY_MISSING": {"tls_server_config": {**tls, "key_file": str(tmp_path / "gone.key")}},
        "REQUIRE_ANY": {"tls_server_config": {**tls, "client_auth_type": "RequireAnyClientCert"}},
        "TLS11": {"tls_server_config": {**tls, "min_version": "TLS11"}},
        "CIPHER": {"tls_server_config": {**tls, "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}},
        "CA_NO_AUTH": {"tls_server_config": {**tls, "client_ca_file": pki.ca_crt}},
    }
    path = tmp_path / "web.yml"
    if isinstance(content, str) and content in special:
        content = special[content]
    if isinstance(content, dict):
        write_config(path, content)
    elif isinstance(content, str):
        path.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    proc = subprocess.run([EXPORTER, "--root", str(fixture_root), "--web.listen-address", f"127.0.0.1:{free_port()}",
                           "--web.config.file", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--web.config.file" in proc.stderr and expected in proc.stderr, proc.stderr


@pytest.mark.slow
def test_prometheus_scrapes_over_https_with_basic_auth_and_a_client_certificate(
    pki: Pki, fixture_root: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "web.yml", {
        **tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_crt),
        "basic_auth_users": {"prometheus": HASH}})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAMBA"))}
    env["CONDA_EXPORTER_WEB_CONFIG_FILE"] = str(config)  # the env var form
    env["CONDA_EXPORTER_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{port}, 127.0.0.1:{free_port()}"
    with (tmp_path / "exporter.log").open("w") as log:
        proc = subprocess.Popen([EXPORTER, "--root", str(fixture_root), "--scan.workers", "1"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool | None:
            assert proc.poll() is None, (tmp_path / "exporter.log").read_text()
            status = get(port, client_context(pki, cert="client"), "/readyz", password=None)[0]
            return True if status == 401 else None  # up, and asking for credentials

        poll(ready, 60, "the exporter over https")
        tls = {"ca_file": pki.ca_crt, "cert_file": pki.client_crt, "key_file": pki.client_key}
        scrape = {"scheme": "https", "tls_config": tls, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        with Prometheus(tmp_path, [
            {"job_name": "good", **scrape, "basic_auth": {"username": "prometheus", "password": PASSWORD}},
            {"job_name": "wrong", **scrape, "basic_auth": {"username": "prometheus", "password": "guess"}},
        ], []) as prom:
            prom.wait_for('up{job="good"} == 1', 30, "the authenticated scrape")
            prom.wait_for('conda_root_bytes{job="good"}', 30, "the exporter's metrics in Prometheus")
            prom.wait_for('process_resident_memory_bytes{job="good"}', 30, "process metrics")
            prom.wait_for('up{job="wrong"} == 0', 30, "the failed scrape")

            def wrong_target_error() -> str | None:
                targets = prom.api("targets")["activeTargets"]
                errors = [t["lastError"] for t in targets if t["labels"]["job"] == "wrong" and t["lastError"]]
                return errors[0] if errors else None

            assert "401" in poll(wrong_target_error, 30, "the wrong password's error")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
