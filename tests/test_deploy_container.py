"""The Dockerfile: hadolint, its pip steps replayed in a fresh venv, its CMD and HEALTHCHECK run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.deployrun import (
    DOCKERFILE,
    PORT,
    Running,
    assert_known_env_vars,
    assert_serves,
    exporter_has_state_file,
    tool,
)
from tests.deploytools import (
    REPO,
    Container,
    container_of,
    copy_build_context,
    parse_dockerfile,
)
from tests.httpwait import poll

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
    assert container.healthcheck == ["python", "-m", "exporter.expose.probe"]  # tests/test_probe.py runs it
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
        [str(venv / "bin" / "python"), "-c", "import exporter.scan.walk as w; print(w.__file__, w.WALKER)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), f"imported from {where}, not the installed wheel"
    assert where.split()[-1] == "native", "the wheel the image installs must carry the C walker"


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


