"""Configuration: one typed object, from command-line flags over ``CONDA_EXPORTER_*`` env vars over defaults.

Each field declares its command-line flag next to its description, so ``--help``, the env var names
and the README table all come from this one place (``python -m exporter.config`` prints the table).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_PORT", "ENV_PREFIX", "NETWORK_MAX_RATE", "Settings", "flag_of", "markdown_table", "scan_rate"]

ENV_PREFIX = "CONDA_EXPORTER_"
DEFAULT_PORT = 9867
NETWORK_MAX_RATE = 2000
"""Paths per second a scan reads at most from a network filesystem when --scan.max-rate is auto."""


def _flag(flag: str) -> dict[str, Any]:
    return {"flag": flag}


class Settings(BaseSettings):
    """Everything the exporter can be told. Durations are in seconds."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Conda installation to scan; repeat the flag for several. The env var takes "
        "paths separated by ':'. Empty: auto-detect.",
        json_schema_extra=_flag("--root"),
    )
    envs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="An env prefix outside any root (a pixi env, a --prefix env); repeat for several. "
        "The env var takes paths separated by ':'.",
        json_schema_extra=_flag("--env"),
    )
    discover_environments_txt: bool = Field(
        default=False,
        description="Also scan the envs listed in ~/.conda/environments.txt of every user (off: it "
        "reads other users' home directories).",
        json_schema_extra=_flag("--discover.environments-txt"),
    )
    web_listen_address: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [f":{DEFAULT_PORT}"],
        description="Address to serve HTTP on, as [host]:port; repeat the flag for several. An empty host "
        "means all interfaces, IPv6 and IPv4. The env var takes addresses separated by ',' or spaces.",
        json_schema_extra=_flag("--web.listen-address"),
    )
    web_config_file: Path | None = Field(
        default=None,
        description="Web config file (Prometheus exporter-toolkit format): TLS, client certificates, basic "
        "auth, response headers; re-read when it or its certificate files change. Empty: plain HTTP, no auth.",
        json_schema_extra=_flag("--web.config.file"),
    )
    web_telemetry_path: str = Field(
        default="/metrics",
        description="Path under which the metrics are served.",
        json_schema_extra=_flag("--web.telemetry-path"),
    )
    scan_interval: float = Field(
        default=21600.0,
        ge=0,
        description="Seconds between reconcile scans: full rescans at low priority that catch what change "
        "detection missed (0: never).",
        json_schema_extra=_flag("--scan.interval"),
    )
    scan_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Worker processes for a full scan (1: scan in the exporter's own process).",
        json_schema_extra=_flag("--scan.workers"),
    )
    scan_max_rate: int | None = Field(
        default=None, ge=0, json_schema_extra=_flag("--scan.max-rate"), description="Scan budget: paths stat()ed "
        "per second by full and reconcile scans (a copy's look-up in its package cache: one more), over all workers, "
        f"in every 1 s window (0: unlimited). auto: unlimited on local, {NETWORK_MAX_RATE} on network filesystems.",
    )
    scan_cross_filesystems: bool = Field(
        default=False,
        description="Descend into other filesystems mounted below a root (off: like du -x).",
        json_schema_extra=_flag("--scan.cross-filesystems"),
    )
    watch_mode: Literal["auto", "inotify", "poll"] = Field(
        default="auto",
        description="Change detection: inotify watches, polling of fingerprints, or auto (poll for roots on "
        "network filesystems or when a watch cannot be added, else inotify).",
        json_schema_extra=_flag("--watch.mode"),
    )
    watch_debounce: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="Seconds a burst of changes must be quiet before the changed env or cache is rescanned.",
        json_schema_extra=_flag("--watch.debounce"),
    )
    watch_poll_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between fingerprint checks: in poll mode the change detection; with inotify, the check "
        "of each env's top-level dirs, which no watch covers (a file added directly in share/, bin/, lib/, ...).",
        json_schema_extra=_flag("--watch.poll-interval"),
    )
    collect_packages: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Export conda_env_package_bytes for this many biggest packages of each env (0: off; "
        "each adds a series per env).",
        json_schema_extra=_flag("--collect.packages"),
    )
    stale_after: float = Field(
        default=90 * 86400.0,
        gt=0,
        description="Seconds since an env's last conda transaction (conda-meta/history) after which it "
        "counts as stale; an env without a history file never does.",
        json_schema_extra=_flag("--stale.after"),
    )
    state_file: Path | None = Field(
        default=None,
        description="File to keep results in across restarts: served at once on start, then only what "
        "changed meanwhile is rescanned. Empty: no state file.",
        json_schema_extra=_flag("--state.file"),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Least severe log level written to stderr.",
        json_schema_extra=_flag("--log.level"),
    )
    demo_if_no_root: bool = Field(
        default=False,
        description="When no root is given or found, build and serve the demo root instead of failing.",
        json_schema_extra=_flag("--demo-if-no-root"),
    )

    @field_validator("state_file", "web_config_file", "scan_max_rate", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object, info: ValidationInfo) -> object:
        return None if value == "" or (value == "auto" and info.field_name == "scan_max_rate") else value

    @field_validator("roots", "envs", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("web_listen_address", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("web_listen_address")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one [host]:port")
        for address in value:
            parse_listen_address(address)
        return value

    @field_validator("web_telemetry_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/healthz", "/readyz"):
            raise ValueError("must start with '/' and not be '/', '/healthz' or '/readyz'")
        return value


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``[host]:port`` (IPv6 hosts in brackets) into host and port; raise ValueError if bad."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"{address!r} is not [host]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} in {address!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} in {address!r} is out of range")
    return host, port


def scan_rate(settings: Settings) -> tuple[int, bool]:
    """The budget of full scans: (paths per second, 0 unlimited; whether it applies to trees on network
    filesystems only, as auto does)."""
    if settings.scan_max_rate is None:
        return NETWORK_MAX_RATE, True
    return settings.scan_max_rate, False


def flag_of(field_name: str) -> str:
    """The command-line flag of a Settings field."""
    extra = Settings.model_fields[field_name].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["flag"])


def markdown_table() -> str:
    """The README's configuration table, generated from the Settings fields."""
    lines = ["| flag | env var | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        special = {"roots": "auto-detect", "envs": "none", "state_file": "none", "web_config_file": "none",
                   "web_listen_address": f"`:{DEFAULT_PORT}`", "scan_max_rate": "auto"}
        shown = special.get(name) or f"`{default}`".replace("`False`", "off")
        lines.append(f"| `{flag_of(name)}` | `{ENV_PREFIX}{name.upper()}` | {shown} | {info.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
