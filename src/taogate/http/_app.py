"""The ASGI app: the route table's handlers behind the edge, problem answers, and the
service's lifespan.

Each group of handlers is its own module (``_items``, ``_ops``, ``_jobs``, ``_console``,
``_degrade``); they share the app's ``Context``. ``_edge`` is the one ASGI layer in front.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from taogate._errors import TaogateError
from taogate._gateway import Gateway
from taogate._logging import request_id_var
from taogate._service import Service
from taogate._settings import Settings
from taogate.http._auth import Clients
from taogate.http._console import ConsoleRoutes
from taogate.http._context import Context
from taogate.http._degrade import DegradeRoutes
from taogate.http._edge import Edge
from taogate.http._items import ItemRoutes
from taogate.http._jobs import JobRoutes
from taogate.http._metrics import Metrics
from taogate.http._ops import OpsRoutes
from taogate.http._problems import Problem, problem_for_error
from taogate.http._routes import route_table
from taogate.providers.base import Provider

__all__ = ["create_app"]

log = logging.getLogger("taogate.http")


class _AsgiEndpoint:
    """Marks a bound method as a raw ASGI endpoint for Starlette's router (no Request wrapper)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


@contextlib.contextmanager
def _sighup_reloads_secrets(gateway: Gateway, *, enabled: bool) -> Iterator[None]:
    """While inside, SIGHUP re-reads the gateway's secret files (on the loop, between requests)."""
    if not enabled or not hasattr(signal, "SIGHUP"):
        yield
        return

    def reload() -> None:
        rotated = gateway.reload_secrets()
        log.info("SIGHUP: secret files re-read", extra={"rotated": rotated})

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def create_app(
    settings: Settings,
    *,
    provider: Provider | None = None,
    clock: Callable[[], float] | None = None,
    reload_on_sighup: bool = False,
) -> Starlette:
    """The ASGI app for ``settings``; the service (the gateway, its replicas and job worker)
    starts and stops with the app's lifespan.

    ``reload_on_sighup`` (``taogate serve``): while the app runs, SIGHUP re-reads every
    ``secret_file`` instead of ending the process.
    """
    metrics = Metrics()
    service = Service(settings, provider=provider, clock=clock)
    gateway = service.gateway
    clients = Clients(
        settings.server.clients,
        clock=clock or time.monotonic,
        failures_per_minute=settings.server.auth_failures_per_minute,
    )
    ctx = Context(settings, service, clients)
    items = ItemRoutes(ctx)
    ops = OpsRoutes(ctx, metrics)
    jobs = JobRoutes(ctx)
    console = ConsoleRoutes(ctx)
    degrade = DegradeRoutes(ctx)
    metrics.watch(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        console.sampler.start()
        ops.ready = True
        if clients.open:
            log.warning("no [[server.clients]] configured: the API accepts every caller")
        log.info(
            "taogate ready",
            extra={
                "credentials": [c.masked for c in gateway.pool.credentials],
                "clients": clients.describe(),
            },
        )
        with _sighup_reloads_secrets(gateway, enabled=reload_on_sighup):
            try:
                yield
            finally:
                ops.ready = False
                await console.sampler.aclose()
                await service.aclose()
                log.info("taogate stopped")

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response(request.url.path, request_id_var.get())

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "bad-request"
        )
        problem = Problem(slug, str(exc.detail), headers=dict(exc.headers or {}))
        problem.status = exc.status_code  # e.g. 405 keeps its Allow header
        return problem.response(request.url.path, request_id_var.get())

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, TaogateError):
            problem = problem_for_error(exc, redact=gateway.redact)
            return problem.response(request.url.path, request_id_var.get())
        log.exception("unhandled error")
        return Problem("internal-error", "an unexpected error; see the server log").response(
            request.url.path, request_id_var.get()
        )

    groups: dict[str, object] = {
        "items": items,
        "ops": ops,
        "jobs": jobs,
        "console": console,
        "degrade": degrade,
    }
    routes = []
    for spec in route_table(settings):
        group, name = spec.handler.split(".")
        handler = getattr(groups[group], name)
        endpoint = _AsgiEndpoint(handler) if spec.asgi else handler
        routes.append(Route(spec.path, endpoint, methods=spec.methods))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={Problem: on_problem, HTTPException: on_http, Exception: on_error},
    )
    app.add_middleware(
        Edge, settings=settings, metrics=metrics, clients=clients, item_endpoint=items.get_item
    )
    app.state.service = service
    app.state.gateway = gateway
    app.state.metrics = metrics
    return app
