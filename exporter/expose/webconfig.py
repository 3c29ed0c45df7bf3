"""The web config file (``--web.config.file``): Prometheus exporter-toolkit's YAML format, parsed strictly.

Same keys and meaning as exporter-toolkit (``tls_server_config``, ``http_server_config``, ``basic_auth_users``,
``rate_limit``), so an admin can reuse the file written for node_exporter. What Python's ``ssl`` cannot do
exactly is refused with a message rather than served weaker (README, "Secure serving"):

- ``client_auth_type: RequireAnyClientCert`` (require a certificate but do not verify it): OpenSSL through
  Python either verifies a requested certificate or does not request one.
- ``min_version`` below ``TLS12``: OpenSSL 3 allows TLS 1.0/1.1 only at security level 0.
- ``curve_preferences`` with more than one curve: ``ssl`` sets one ECDH curve.

Relative paths are relative to the config file's directory, as in exporter-toolkit.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

__all__ = ["TLSSettings", "WebConfig", "WebConfigError", "build_ssl_context", "parse_web_config"]


class WebConfigError(Exception):
    """The web config file is unusable; the message names the file and the key or the problem."""


# exporter-toolkit's allow-list (web/handler.go): only these headers, some with fixed values.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's crypto/tls names (tls.CipherSuites(), the secure ones exporter-toolkit accepts) -> OpenSSL names.
TLS12_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites are not configurable in Go either (its CipherSuites setting ignores them): accepted, all on.
TLS13_CIPHERS = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    # Go requests a certificate but neither verifies nor uses it: access is exactly that of NoClientCert.
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
REFUSED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

TLS_KEYS = frozenset({"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
                      "cipher_suites", "curve_preferences", "min_version", "max_version",
                      "prefer_server_cipher_suites", "client_allowed_sans"})


@dataclass(frozen=True)
class TLSSettings:
    """``tls_server_config`` as given (paths made absolute); :func:`build_ssl_context` turns it into a context."""

    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = ""
    cipher_suites: tuple[str, ...] = ()
    curve: str = ""
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: tuple[str, ...] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The files this config reads, whose change means a reload."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class WebConfig:
    """A validated web config. ``tls`` None: plain HTTP (still with headers and basic auth, as exporter-toolkit)."""

    path: str
    tls: TLSSettings | None
    headers: tuple[tuple[str, str], ...]
    users: Mapping[str, bytes]
    rate_limit: tuple[float, int] | None = None  # (seconds per token, burst)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path, *(self.tls.files if self.tls else ()))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys (Go's yaml.UnmarshalStrict does; a second user entry must not win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise WebConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Reader:
    """Typed access to one mapping of the file, naming the key path in every error."""

    def __init__(self, where: str, data: object, allowed: frozenset[str]) -> None:
        self.where = where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(where, "must be a mapping")
        for key in data:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else str(key), "unknown key")
        self.data: dict[str, Any] = data

    @staticmethod
    def fail(key: str, problem: str) -> NoReturn:
        raise WebConfigError(f"{key}: {problem}")

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def string(self, name: str) -> str:
        value = self.data.get(name, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(self.key(name), "must be a string")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            self.fail(self.key(name), "must be true or false")
        return value

    def strings(self, name: str) -> tuple[str, ...] | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(self.key(name), "must be a list of strings")
        return tuple(value)

    def string_map(self, name: str) -> dict[str, str]:
        value = self.data.get(name) or {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            self.fail(self.key(name), "must be a mapping of strings to strings")
        return value


def _path(base: Path, value: str) -> str:
    return str(base / value) if value else ""


def _tls(reader: _Reader, base: Path) -> TLSSettings | None:
    r = reader
    enabled = any(r.string(k) for k in ("cert_file", "cert", "key_file", "key", "client_ca_file", "client_ca",
                                        "client_auth_type"))
    if not enabled:
        return None  # exporter-toolkit: no TLS key set means plain HTTP
    if not (r.string("cert_file") or r.string("cert")):
        r.fail(r.where, "missing one of cert or cert_file")
    if not (r.string("key_file") or r.string("key")):
        r.fail(r.where, "missing one of key or key_file")
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = r.string(name) or default
        if text not in TLS_VERSIONS:
            r.fail(r.key(name), f"unknown TLS version {text!r} (one of {', '.join(TLS_VERSIONS)})")
        versions.append(TLS_VERSIONS[text])
    low, high = versions
    if low < ssl.TLSVersion.TLSv1_2:
        r.fail(r.key("min_version"), "below TLS12 is refused: OpenSSL 3 allows TLS 1.0/1.1 only at security level 0")
    if high < low:
        r.fail(r.key("max_version"), "is below min_version")
    auth = r.string("client_auth_type")
    if auth in REFUSED_CLIENT_AUTH:
        r.fail(r.key("client_auth_type"), f"{auth} (require a client certificate without verifying it) cannot be "
               "expressed with Python's ssl; use RequireAndVerifyClientCert with client_ca_file")
    if auth not in CLIENT_AUTH:
        r.fail(r.key("client_auth_type"), f"invalid {auth!r} (one of {', '.join(k for k in CLIENT_AUTH if k)})")
    if (r.string("client_ca_file") or r.string("client_ca")) and CLIENT_AUTH[auth] == ssl.CERT_NONE:
        r.fail(r.key("client_ca_file"), "client CAs configured without a client_auth_type that verifies them")
    sans = r.strings("client_allowed_sans")
    if sans is not None and CLIENT_AUTH[auth] != ssl.CERT_REQUIRED:
        r.fail(r.key("client_allowed_sans"), "requires client_auth_type RequireAndVerifyClientCert")
    suites = r.strings("cipher_suites") or ()
    for suite in suites:
        if suite not in TLS12_CIPHERS and suite not in TLS13_CIPHERS:
            r.fail(r.key("cipher_suites"), f"unknown cipher: {suite}")
    curves = r.strings("curve_preferences") or ()
    for curve in curves:
        if curve not in CURVES:
            r.fail(r.key("curve_preferences"), f"unknown curve: {curve}")
    if len(curves) > 1:
        r.fail(r.key("curve_preferences"), "more than one curve cannot be set with Python's ssl; give one")
    return TLSSettings(
        cert_file=_path(base, r.string("cert_file")), key_file=_path(base, r.string("key_file")),
        cert=r.string("cert"), key=r.string("key"), client_ca_file=_path(base, r.string("client_ca_file")),
        client_ca=r.string("client_ca"), client_auth_type=auth, cipher_suites=suites,
        curve=CURVES[curves[0]] if curves else "", min_version=low, max_version=high,
        prefer_server_cipher_suites=r.boolean("prefer_server_cipher_suites", True), client_allowed_sans=sans,
    )


def _headers(reader: _Reader) -> tuple[tuple[str, str], ...]:
    headers = reader.string_map("headers")
    for name, value in headers.items():
        if name not in ALLOWED_HEADERS:
            reader.fail(f"{reader.key('headers')}.{name}", f"HTTP header {name!r} can not be configured "
                        f"(allowed: {', '.join(ALLOWED_HEADERS)})")
        allowed = ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            reader.fail(f"{reader.key('headers')}.{name}", f"must be one of {', '.join(allowed)}, not {value!r}")
        if "\r" in value or "\n" in value:
            reader.fail(f"{reader.key('headers')}.{name}", "must be one line")
    return tuple(sorted(headers.items()))


def _users(reader: _Reader) -> dict[str, bytes]:
    users = reader.string_map("basic_auth_users")
    for user, hashed in users.items():
        if not BCRYPT_HASH.match(hashed):
            reader.fail(f"basic_auth_users.{user}", "not a bcrypt hash ($2a$, $2b$ or $2y$, cost, 53 characters)")
        if ":" in user:
            reader.fail(f"basic_auth_users.{user}", "a user name cannot contain ':'")
    return {user: hashed.encode() for user, hashed in users.items()}


def _duration(reader: _Reader, name: str) -> float:
    text = reader.data.get(name, 0)
    if text in (0, "0"):
        return 0.0
    if not isinstance(text, str) or not GO_DURATION.match(text):
        reader.fail(reader.key(name), f"not a duration like 1s or 100ms: {text!r}")
    return sum(float(n) * DURATION_UNITS[unit] for n, unit in GO_DURATION_PART.findall(text))


def _rate_limit(reader: _Reader) -> tuple[float, int] | None:
    interval = _duration(reader, "interval")
    burst = reader.data.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        reader.fail(reader.key("burst"), "must be a whole number >= 0")
    return (interval, burst) if interval > 0 else None


def parse_web_config(path: str) -> WebConfig:
    """Read and validate the file; raise WebConfigError naming the key or problem."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise WebConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"{path} is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: bad YAML: {' '.join(str(exc).split())}") from None
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    try:
        top = _Reader("", data, frozenset({"tls_server_config", "http_server_config", "basic_auth_users",
                                           "rate_limit"}))
        base = Path(path).resolve().parent
        tls = _tls(_Reader("tls_server_config", top.data.get("tls_server_config"), TLS_KEYS), base)
        http = _Reader("http_server_config", top.data.get("http_server_config"), frozenset({"http2", "headers"}))
        http.boolean("http2", True)  # accepted either way: this server speaks HTTP/1.1 only
        rate = _rate_limit(_Reader("rate_limit", top.data.get("rate_limit"), frozenset({"burst", "interval"})))
        return WebConfig(str(Path(path).resolve()), tls, _headers(http), _users(top), rate)
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise WebConfigError(f"tls_server_config.{key}: cannot read {path}: {exc.strerror}") from None


def _no_password() -> NoReturn:
    raise WebConfigError("tls_server_config: the key is encrypted (exporter-toolkit takes unencrypted keys only)")


def _load_chain(context: ssl.SSLContext, tls: TLSSettings) -> None:
    cert = _read("cert_file", tls.cert_file) if tls.cert_file else tls.cert.encode()
    key = _read("key_file", tls.key_file) if tls.key_file else tls.key.encode()
    # ssl loads a chain from files only: inline ones go through a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="webconfig-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for target, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        password: Callable[[], NoReturn] = _no_password
        try:
            context.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise WebConfigError(f"tls_server_config: certificate and key do not load together: "
                                 f"{exc.reason or exc}") from None


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """The server context for ``tls``, its files read now; raise WebConfigError naming the key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    _load_chain(context, tls)
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if context.verify_mode != ssl.CERT_NONE:
        try:
            if tls.client_ca_file:
                context.load_verify_locations(cadata=_read("client_ca_file", tls.client_ca_file).decode("latin-1"))
            elif tls.client_ca:
                context.load_verify_locations(cadata=tls.client_ca)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Go verifies against the system roots then
        except ssl.SSLError as exc:
            raise WebConfigError(f"tls_server_config.client_ca_file: no CA certificate in it: {exc.reason}") from None
    ciphers = [TLS12_CIPHERS[s] for s in tls.cipher_suites if s in TLS12_CIPHERS]
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError:
            raise WebConfigError("tls_server_config.cipher_suites: OpenSSL can use none of them") from None
    elif tls.cipher_suites and tls.min_version < ssl.TLSVersion.TLSv1_3:
        raise WebConfigError("tls_server_config.cipher_suites: only TLS 1.3 suites given; set min_version TLS13")
    if tls.curve:
        context.set_ecdh_curve(tls.curve)
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context
