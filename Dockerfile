# syntax=docker/dockerfile:1
# taogate's service image: `docker build -t taogate .` then
#   docker run -p 8080:8080 -v "$PWD/taogate.toml:/etc/taogate/taogate.toml:ro" \
#     -e TAOBAO_KEY1_SECRET taogate
# No configuration and no secret is baked in: the config file is mounted, secrets arrive as
# environment variables named by `secret_env` / `token_env`. See docs/operations.md.

# The base image is pinned by digest (python 3.12.14 on Debian bookworm, slim); bump the tag and
# the digest together, on purpose, like `make lock` bumps the Python dependencies.
ARG BASE=python:3.12.14-slim-bookworm@sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579

# --- build: install taogate and its dependencies into a virtualenv, exactly as uv.lock pins them
FROM ${BASE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/taogate \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

# uv at the pin pyproject.toml's dev extra and uv.lock carry (scripts/setup bootstraps the same)
RUN pip install --no-cache-dir uv==0.13.10
WORKDIR /src
# the dependencies first (a layer that changes only with the lock), then taogate itself;
# --frozen: the lock is used as it is and never re-resolved
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --frozen --no-dev --extra speed --no-install-project
COPY src ./src
# every dependency ships a wheel for linux (no compiler needed); the bytecode is compiled here
# because the root filesystem is read-only at run time
RUN uv sync --frozen --no-dev --extra speed --no-editable \
    && /opt/taogate/bin/python -m compileall -q /opt/taogate

# --- runtime: the virtualenv on a clean slim image, as a non-root user ------------------------
FROM ${BASE}

LABEL org.opencontainers.image.title="taogate" \
      org.opencontainers.image.description="A gateway for the rate-limited Taobao Open Platform API" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 taogate \
    && useradd --system --uid 10001 --gid taogate --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin taogate

COPY --from=build /opt/taogate /opt/taogate

ENV PATH=/opt/taogate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TAOGATE_SERVER__PORT=8080

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# liveness only (the process answers); readiness is /readyz, which the orchestrator asks
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['TAOGATE_SERVER__PORT'] + '/healthz', timeout=2)"]

# SIGTERM: uvicorn stops accepting, requests in progress finish (server.graceful_shutdown_s)
STOPSIGNAL SIGTERM
ENTRYPOINT ["taogate"]
CMD ["serve", "--config", "/etc/taogate/taogate.toml", "--host", "0.0.0.0"]
