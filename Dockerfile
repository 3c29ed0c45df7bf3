# syntax=docker/dockerfile:1
# conda-env-exporter image. Build:  docker build -t conda-env-exporter .
# Run (the conda root read-only, the state file in a named volume):
#   docker run -d --name conda-env-exporter -p 9867:9867 \
#     -v /opt/conda:/conda:ro -v conda-env-exporter-state:/var/lib/conda-env-exporter \
#     --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges conda-env-exporter
#
# Expected size: ~215 MB uncompressed (~75 MB compressed). python:3.11-slim is ~125 MB (mostly the
# interpreter and its stdlib); the installed wheels add ~86 MB, of which numpy is 73 MB (45 MB of
# package + the 28 MB OpenBLAS it bundles) and pydantic + pydantic-core 10 MB. No compiler, pip
# cache or wheels dir is left in the final stage.
# tests/test_deploy.py replays the two pip steps below in a fresh virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- stage 1: build the project wheel and collect every dependency as a wheel ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# A C compiler for the native walker (exporter/scan/_walker.c); it stays in this stage. Debian's stable
# packages take only security fixes, so pinning their versions would only break the build later.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# .dockerignore lets through only pyproject.toml, setup.py, README.md, LICENSE and exporter/
COPY . .
RUN pip wheel --wheel-dir /wheels .

# ---- stage 2: runtime, installs from the wheels only (--no-index: no network) ----
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/conda_env_exporter-*.whl
# Fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it; the conda root only needs to be
# world-readable (conda's default), the state dir is the one place the exporter writes.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter \
    && mkdir -p /var/lib/conda-env-exporter /conda \
    && chown 10001:10001 /var/lib/conda-env-exporter
VOLUME ["/var/lib/conda-env-exporter"]
ENV CONDA_EXPORTER_ROOTS=/conda \
    CONDA_EXPORTER_WEB_LISTEN_ADDRESS=:9867 \
    CONDA_EXPORTER_STATE_FILE=/var/lib/conda-env-exporter/state.json
USER 10001:10001
EXPOSE 9867
# No curl in slim images: the probe is the exporter's own (exporter/expose/probe.py). It reads the same
# CONDA_EXPORTER_* settings, so it follows the port and speaks TLS when a web config is set; a 401 from basic
# auth or a refused client certificate counts as serving, since only the exporter's own guard answers so.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "exporter.expose.probe"]
ENTRYPOINT ["conda-env-exporter"]
CMD ["serve"]
