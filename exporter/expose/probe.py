"""The health probe of the container image: ``python -m exporter.expose.probe`` asks the running exporter's
``/healthz`` over loopback.

It reads the same ``CONDA_EXPORTER_*`` settings as ``serve``, so it finds the first listen address and, when a
web config is set, speaks TLS to it (without verifying the certificate: it talks to its own process over
loopback, so who answers is not in question, and a probe must not break when a certificate expires).

Exit status 0 when the exporter answers 200, and also when the web config's own guard answers: a 401 because
basic auth is required (the probe has no password, and the bcrypt hashes in the web config cannot be
reversed), or a TLS refusal for want of a client certificate when the web config requires one. Either answer
comes from the exporter's serving threads, so it is serving. Exit status 1 for everything else: nothing
listening, a timeout, any other status (``/healthz`` answers non-200 when the scheduling loop stopped). One
line on stderr says which.
"""

from __future__ import annotations

import http.client
import ssl
import sys

from exporter.config import Settings, parse_listen_address
from exporter.expose.webconfig import WebConfig, WebConfigError, parse_web_config

__all__ = ["probe"]

TIMEOUT_SECONDS = 4.0
_CERT_REQUIRED = ("RequireAnyClientCert", "RequireAndVerifyClientCert")


def _connection(settings: Settings, config: WebConfig | None) -> http.client.HTTPConnection:
    host, port = parse_listen_address(settings.web_listen_address[0])
    host = host or "127.0.0.1"  # every interface includes loopback
    if config is None or config.tls is None:
        return http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # see the module docstring
    return http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=context)


def probe(settings: Settings) -> tuple[bool, str]:
    """Whether the exporter configured by ``settings`` serves, and a one-line reason."""
    config = None
    if settings.web_config_file is not None:
        try:
            config = parse_web_config(str(settings.web_config_file))
        except WebConfigError as exc:
            return False, f"web config: {exc}"
    connection = _connection(settings, config)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(200).decode("utf-8", "replace").strip()
    except ssl.SSLError as exc:
        wants_cert = config is not None and config.tls is not None and config.tls.client_auth_type in _CERT_REQUIRED
        if wants_cert and ("CERTIFICATE_REQUIRED" in str(exc) or "HANDSHAKE_FAILURE" in str(exc)):
            return True, "serving (TLS asks for a client certificate, which the probe does not have)"
        return False, f"TLS: {exc}"
    except OSError as exc:
        return False, f"no answer: {exc}"
    finally:
        connection.close()
    return _judge(response.status, body, config)


def _judge(status: int, body: str, config: WebConfig | None) -> tuple[bool, str]:
    if status == 200:
        return True, body or "ok"
    if status == 401 and config is not None and config.users:
        return True, "serving (basic auth required, which the probe cannot supply)"
    return False, f"/healthz answered {status}: {body}"


def main() -> int:
    """Entry point of ``python -m exporter.expose.probe``."""
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"probe: bad settings: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    ok, reason = probe(settings)
    print(f"probe: {reason}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
