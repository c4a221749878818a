# syntax=docker/dockerfile:1
# taogate's service image: `docker build -t taogate .` then
#   docker run -p 8080:8080 -v "$PWD/taogate.toml:/etc/taogate/taogate.toml:ro" \
#     -e TAOBAO_KEY1_SECRET taogate
# No configuration and no secret is baked in: the config file is mounted, secrets arrive as
# environment variables named by `secret_env` / `token_env`. See docs/operations.md.

ARG PYTHON_VERSION=3.12

# --- build: install taogate and its dependencies into a virtualenv ----------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/taogate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# every dependency ships a wheel for linux (no compiler needed); the bytecode is compiled here
# because the root filesystem is read-only at run time
RUN /opt/taogate/bin/pip install --no-compile ".[speed]" \
    && /opt/taogate/bin/python -m compileall -q /opt/taogate

# --- runtime: the virtualenv on a clean slim image, as a non-root user ------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm

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
