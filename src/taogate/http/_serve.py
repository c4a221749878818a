"""Running the service on uvicorn: one process, or several workers sharing the quota.

Without Redis, workers cannot share limits, so each takes its share: every credential's ``qps``
and ``daily_budget`` divided by the number of workers. N workers together then never exceed a
key's quota. Shutdown is graceful: uvicorn stops accepting, waits up to
``[server] graceful_shutdown_s`` for requests in progress, then the gateway closes.

SIGHUP re-reads every ``secret_file`` in place, in every worker: with ``--workers N`` the
parent passes it on to each worker instead of restarting them (a restarted worker would forget
the recent calls its limits count, and old and new workers would overlap on the quota).

Connections run on :class:`~taogate.http._protocol.GuardedHttpToolsProtocol` (a deadline and a
size limit on each request's headers). Without any ``[[server.clients]]`` the service refuses to
listen on an address other than loopback unless ``[server] allow_anonymous = true``.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import math
import os
import signal
import sys

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from taogate._errors import ConfigurationError
from taogate._logging import configure_logging
from taogate._settings import ServerSettings, Settings, load_settings
from taogate.http._app import create_app
from taogate.http._protocol import ConnectionLimits, ServiceConfig

__all__ = ["app_from_env", "check_exposure", "connection_limits", "serve", "share_quota"]

CONFIG_ENV = "TAOGATE_CONFIG_FILE"
WORKERS_ENV = "TAOGATE_WORKERS_SHARE"


def share_quota(settings: Settings, workers: int) -> Settings:
    """``settings`` with each credential's rate and daily budget divided among ``workers``."""
    if workers <= 1:
        return settings
    credentials = [
        c.model_copy(
            update={
                "qps": c.qps / workers,
                "daily_budget": None
                if c.daily_budget is None
                else max(1, math.floor(c.daily_budget / workers)),
            }
        )
        for c in settings.credentials
    ]
    return settings.model_copy(update={"credentials": credentials})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve to any address
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve an API open to every caller on a network address.

    Raises :class:`ConfigurationError` when no ``[[server.clients]]`` are configured, ``host``
    is not loopback and ``[server] allow_anonymous`` is not set.
    """
    server = settings.server
    if server.clients or server.allow_anonymous or is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve on {host}: no [[server.clients]] are configured, so anyone who can "
        "reach that address could use the API and its quota; add a client with a token, bind "
        "to 127.0.0.1, or set [server] allow_anonymous = true",
        field="server.allow_anonymous",
    )


def connection_limits(server: ServerSettings) -> ConnectionLimits:
    """The limits on receiving a request's headers, from ``[server]``."""
    return ConnectionLimits(
        header_timeout_s=server.header_timeout_s, max_header_bytes=server.max_header_bytes
    )


def app_from_env() -> Starlette:
    """The app for a uvicorn worker process (``--workers N``): config from the environment."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    settings = share_quota(settings, int(os.environ.get(WORKERS_ENV, "1")))
    configure_logging(settings.server.log_level, secrets=settings.secret_values())
    _ignore_sighup_until_ready()
    return create_app(settings, reload_on_sighup=True)


def _ignore_sighup_until_ready() -> None:
    """Until the app's lifespan takes SIGHUP over, a SIGHUP must not end the process."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


class _Workers(Multiprocess):
    """uvicorn's worker supervisor, but SIGHUP goes on to every worker (no restart)."""

    def handle_hup(self) -> None:
        logging.getLogger("taogate.http").info("SIGHUP: passed on to every worker")
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)


def _run_workers(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for ``workers > 1``, with :class:`_Workers` as the supervisor."""
    sock = config.bind_socket()
    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # pragma: no cover
        # older uvicorn: the supervisor takes the worker's entry point
        server = uvicorn.Server(config)
        _Workers(config, target=server.run, sockets=[sock]).run()  # type: ignore[call-arg]
    else:
        _Workers(config, sockets=[sock]).run()


def serve(
    settings: Settings,
    *,
    config_path: str | None,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully.

    Raises :class:`ConfigurationError` (before binding) when :func:`check_exposure` refuses.
    """
    server = settings.server
    check_exposure(settings, host or server.host)
    common = {
        "host": host or server.host,
        "port": server.port if port is None else port,
        "timeout_graceful_shutdown": server.graceful_shutdown_s,
        "log_config": None,
        "access_log": False,  # our own access log, when enabled, carries the request id
        "lifespan": "on",
        "limits": connection_limits(server),
        "loop": "uvloop",
        "server_header": False,
    }
    if workers <= 1:
        configure_logging(server.log_level, secrets=settings.secret_values())
        _ignore_sighup_until_ready()
        app = create_app(settings, reload_on_sighup=True)
        single = uvicorn.Server(ServiceConfig(app, **common))  # type: ignore[arg-type]
        single.run()
        if not single.started:  # could not bind, or the lifespan failed: uvicorn.run's exit
            sys.exit(3)
        return
    os.environ[WORKERS_ENV] = str(workers)
    if config_path:
        os.environ[CONFIG_ENV] = config_path
    configure_logging(server.log_level, secrets=settings.secret_values())
    config = ServiceConfig(
        "taogate.http._serve:app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )
    _run_workers(config)
