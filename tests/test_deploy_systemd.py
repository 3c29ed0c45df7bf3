"""The systemd unit: verify, exposure, hardening, and the exporter started from its own ExecStart."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deployrun import (
    ENV_FILE,
    EXPORTER,
    PORT,
    UNIT,
    Running,
    assert_known_env_vars,
    assert_serves,
    clean_env,
    exporter_has_state_file,
    substitute,
)
from tests.deploytools import (
    expand_exec,
    parse_env_file,
    parse_unit,
    unit_environment,
    unit_values,
)
from tests.httpwait import free_port, poll

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


