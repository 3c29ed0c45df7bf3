"""What the web config does to each connection and request: TLS context, basic auth, headers, rate limit,
and the reload of the file (and of the certificate files it names) when they change.

Basic auth checks a password against its bcrypt hash once, then serves a cache of successful checks
(keyed by a SHA-256 of user, stored hash and password; bounded): bcrypt costs ~50-100 ms, a scrape
every 15 s must not pay it. A user that does not exist is checked against a dummy hash of the same
cost, so a failed check takes as long whether or not the user exists. bcrypt runs one check at a
time (as in exporter-toolkit), so a flood of bad passwords uses one core, not all of them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bcrypt

from exporter.expose.webconfig import WebConfig, WebConfigError, build_ssl_context, parse_web_config

__all__ = ["RELOADS", "ActiveWebConfig", "Authenticator", "WebConfigWatcher", "load_web_config", "san_allowed"]

log = logging.getLogger(__name__)

AUTH_CACHE_SIZE = 1024
RELOAD_CHECK_SECONDS = 1.0
RELOADS: Counter[str] = Counter({"success": 0, "failure": 0})
"""``conda_exporter_web_config_reloads_total`` by result; read by the live self-metrics."""


class Authenticator:
    """Checks ``Authorization: Basic`` against ``users`` (user -> bcrypt hash)."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        costs = Counter(int(h.split(b"$")[2]) for h in self._users.values())
        cost = costs.most_common(1)[0][0] if costs else 10
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost)) if self._users else b""
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header value names a user and their password."""
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user_pass = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_bytes, colon, password = user_pass.partition(b":")
        if not colon:
            return False
        user = user_bytes.decode("utf-8", "replace")
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user_bytes, hashed or b"", password))).digest()
        with self._cache_lock:
            if hashed is not None and key in self._ok:
                self._ok.move_to_end(key)
                return True
        with self._bcrypt_lock:
            matches = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        if not (matches and hashed is not None):
            return False
        with self._cache_lock:
            self._ok[key] = None
            while len(self._ok) > AUTH_CACHE_SIZE:
                self._ok.popitem(last=False)
        return True


class RateLimiter:
    """exporter-toolkit's ``rate_limit``: a token bucket, one token every ``interval`` seconds, ``burst`` deep."""

    def __init__(self, interval: float, burst: int) -> None:
        self._interval, self._burst = interval, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self._burst), self._tokens + (now - self._at) / self._interval)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


def san_allowed(peer_cert: Mapping[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """Whether a verified peer certificate (``getpeercert()``) has one of the allowed SANs (DNS, IP, email, URI).
    IP addresses compare as addresses, since Python and Go spell IPv6 differently."""
    if not peer_cert:
        return False
    wanted = set(allowed)
    wanted_ips = set()
    for value in allowed:
        with contextlib.suppress(ValueError):
            wanted_ips.add(ipaddress.ip_address(value))
    for kind, value in peer_cert.get("subjectAltName", ()):
        if kind == "IP Address":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(value.strip()) in wanted_ips:
                    return True
        elif kind in ("DNS", "email", "URI") and value in wanted:
            return True
    return False


@dataclass(frozen=True)
class ActiveWebConfig:
    """A loaded web config: the parsed file, its TLS context (None: plain HTTP), its authenticator."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None
    auth: Authenticator
    limiter: RateLimiter | None

    def unauthorized(self, authorization: str) -> bool:
        """True when basic auth is on and the header does not pass it."""
        return self.auth.enabled and not self.auth.check(authorization)

    def limited(self) -> bool:
        return self.limiter is not None and not self.limiter.allow()


def load_web_config(path: str) -> ActiveWebConfig:
    """Parse the file and read what it names; raise WebConfigError with one line naming the problem."""
    config = parse_web_config(path)
    try:
        context = build_ssl_context(config.tls) if config.tls else None
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    limiter = RateLimiter(*config.rate_limit) if config.rate_limit else None
    return ActiveWebConfig(config, context, Authenticator(config.users), limiter)


def _signature(files: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    found: list[tuple[int, int, int] | None] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class WebConfigWatcher:
    """Holds the active web config; a thread re-reads the file when it or a file it names changes (checked
    once a second by inode, size and mtime). A bad file then keeps the last good config, logs one line
    and counts a failure; it is tried again when the files change again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._active = load_web_config(path)  # a bad file at start raises: the caller makes it a usage error
        self._signature = _signature(self._active.config.files)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-config", daemon=True)

    @property
    def active(self) -> ActiveWebConfig:
        return self._active

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(RELOAD_CHECK_SECONDS):
            self.check()

    def check(self) -> None:
        """Reload if a watched file changed since the last load attempt."""
        signature = _signature(self._active.config.files)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            fresh = load_web_config(self.path)
        except WebConfigError as exc:
            RELOADS["failure"] += 1
            log.error("web config reload failed, keeping the previous one: %s", exc)
            return
        except Exception as exc:  # never let the watcher die: the previous config keeps serving
            RELOADS["failure"] += 1
            log.error("web config reload failed, keeping the previous one: %r", exc)
            return
        self._active = fresh
        self._signature = _signature(fresh.config.files)  # the files the new config names
        RELOADS["success"] += 1
        log.info("web config reloaded from %s", self.path)
