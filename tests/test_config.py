"""Settings come from the values given (the flags) over ``CONDA_EXPORTER_*`` env vars over the defaults, as
pydantic-settings' BaseSettings reads them; env var texts are parsed by the fields' own validators, and a bad
one names its field. Expected values are written out by hand."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.config import Settings


@pytest.fixture(autouse=True)
def _no_exporter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().startswith("conda_exporter_"):
            monkeypatch.delenv(name)


def test_flag_over_env_var_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().scan_workers == 2
    monkeypatch.setenv("CONDA_EXPORTER_SCAN_WORKERS", "3")
    monkeypatch.setenv("conda_exporter_scan_interval", "60")
    assert Settings().scan_workers == 3
    assert Settings().scan_interval == 60.0
    assert Settings(scan_workers=5).scan_workers == 5
    assert Settings(scan_workers=5).scan_interval == 60.0


def test_env_var_texts_are_parsed_by_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDA_EXPORTER_ROOTS", "/a::/b:")
    monkeypatch.setenv("CONDA_EXPORTER_ENVS", "")
    monkeypatch.setenv("CONDA_EXPORTER_WEB_LISTEN_ADDRESS", ":1, [::1]:2 127.0.0.1:3")
    monkeypatch.setenv("CONDA_EXPORTER_STATE_FILE", "")
    monkeypatch.setenv("CONDA_EXPORTER_SCAN_MAX_RATE", "auto")
    monkeypatch.setenv("CONDA_EXPORTER_DISCOVER_ENVIRONMENTS_TXT", "yes")
    settings = Settings()
    assert settings.roots == [Path("/a"), Path("/b")]
    assert settings.envs == []
    assert settings.web_listen_address == [":1", "[::1]:2", "127.0.0.1:3"]
    assert settings.state_file is None
    assert settings.scan_max_rate is None
    assert settings.discover_environments_txt is True


@pytest.mark.parametrize(
    ("name", "value"),
    [("SCAN_WORKERS", ""), ("SCAN_WORKERS", "many"), ("SCAN_WORKERS", "0"), ("WATCH_MODE", "POLL"),
     ("WEB_LISTEN_ADDRESS", ""), ("WEB_TELEMETRY_PATH", "/healthz"), ("SCAN_MAX_RATE", "null")],
)
def test_a_bad_env_var_names_its_field(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"CONDA_EXPORTER_{name}", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [err["loc"] for err in caught.value.errors()] == [(name.lower(),)]


def test_an_unknown_value_given_is_refused() -> None:
    unknown: dict[str, Any] = {"bogus": 1}  # (through a dict: mypy's pydantic plugin refuses the keyword)
    with pytest.raises(ValidationError) as caught:
        Settings(**unknown)
    assert [err["loc"] for err in caught.value.errors()] == [("bogus",)]

