"""The ASGI app: routes, the edge middleware, problem answers and the service's lifespan.

Starlette routes behind one pure ASGI middleware (request id, admission control, metrics,
access log) — no ``BaseHTTPMiddleware``, no response models: the L1 hit path is a dict lookup,
a GCRA check and an ``orjson.dumps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taogate._errors import InvalidRequest, TaogateError
from taogate._gateway import Gateway
from taogate._logging import request_id_var
from taogate._service import Service
from taogate._settings import Settings
from taogate.http._answers import Invalidated, Keys
from taogate.http._auth import Clients
from taogate.http._body import ClientGone, has_body, receive_body, replay
from taogate.http._console import ConsoleRoutes
from taogate.http._context import Context, json_response
from taogate.http._degrade import DegradeRoutes
from taogate.http._edge_cache import ItemCaching, etag_matches
from taogate.http._jobs import JobRoutes, job_body_limit
from taogate.http._metrics import Metrics
from taogate.http._openapi import openapi_document
from taogate.http._problems import Problem, problem_for_error
from taogate.http._routes import ITEM_ROUTE, route_table
from taogate.providers.base import Provider

__all__ = ["create_app"]

log = logging.getLogger("taogate.http")
access_log = logging.getLogger("taogate.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: never shed: probes, scrapes and the operator console (most needed under overload)
_UNGUARDED = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/console",
        "/console/console.js",
        "/console/console.css",
        "/v1/admin/state",
    }
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _query_float(query: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Problem("bad-request", f"{name} must be a number of seconds") from None
    if not low <= value <= high or math.isnan(value):
        raise Problem("bad-request", f"{name} must be between {low:g} and {high:g}")
    return value


def _query_bool(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise Problem("bad-request", f"{name} must be true or false")


class _Api:
    """The lookup, admin and probe handlers, with what they share with the other routes."""

    def __init__(self, ctx: Context, metrics: Metrics):
        self.ctx = ctx
        self.settings = ctx.settings
        self.gw = ctx.gw
        self.clients = ctx.clients
        self.metrics = metrics
        self.openapi = orjson.dumps(openapi_document(ctx.settings))
        self.caching = ItemCaching(ctx.settings)
        self.ready = False

    async def get_item(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /v1/items/{num_iid}`` as a bare ASGI endpoint: the hit path, kept short.

        A found item carries caching headers (``[server.edge_cache]``, see ``_edge_cache``)
        and a matching ``If-None-Match`` is answered 304 without a body.
        """
        caching = self.caching
        try:
            authorization = if_none_match = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"if-none-match":  # several lines make one list
                    if_none_match = value if if_none_match is None else if_none_match + b"," + value
            client = self.clients.authenticate(authorization, _client_host(scope))
            self.clients.admit(client)
            num_iid: str = scope["path_params"]["num_iid"]
            max_age = allow_stale = None
            if scope["query_string"]:
                query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
                max_age = _query_float(query, "max_age", 0, 86400)
                allow_stale = _query_bool(query, "allow_stale")
            try:
                lookup = await self.gw.get_one(
                    num_iid,
                    max_age_s=max_age,
                    allow_stale=True if allow_stale is None else allow_stale,
                )
            except InvalidRequest as exc:
                raise problem_for_error(exc, num_iid) from None
            if lookup.error is not None:
                raise problem_for_error(lookup.error, num_iid, redact=self.gw.redact)
            if lookup.item is None:
                raise Problem(
                    "item-not-found",
                    f"item {num_iid} does not exist",
                    headers=caching.not_found_headers(lookup),
                    num_iid=num_iid,
                )
        except Problem as problem:
            await problem.response(scope["path"], request_id_var.get())(scope, receive, send)
            return
        item_json, etag = caching.item_json(lookup.item)
        status = 200
        if not caching.enabled:
            body = caching.body(lookup, item_json)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
        elif if_none_match is not None and etag_matches(if_none_match, etag):
            status, body = 304, b""
            headers = [(b"etag", etag), (b"cache-control", caching.cache_control(lookup, max_age))]
        else:
            body = caching.body(lookup, item_json)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"cache-control", caching.cache_control(lookup, max_age)),
                (b"etag", etag),
                (b"last-modified", caching.last_modified(lookup)),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _ids_body(self, request: Request, extra: frozenset[str]) -> dict[str, Any]:
        body = await self.ctx.read_body(request)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Problem("bad-request", "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise Problem("bad-request", 'the body must be a JSON object {"ids": [...]}')
        unknown = set(doc) - extra - {"ids"}
        if unknown:
            raise Problem("bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
        limit = self.settings.server.max_batch_ids
        self.ctx.checked_ids(doc.get("ids"), limit, f"at most {limit} per request")
        return doc

    async def batch(self, request: Request) -> Response:
        self.ctx.client(request)
        doc = await self._ids_body(request, frozenset({"max_age", "allow_stale"}))
        max_age = doc.get("max_age")
        if "max_age" in doc and (
            max_age is None
            or isinstance(max_age, bool)
            or not isinstance(max_age, int | float)
            or not 0 <= max_age <= 86400
        ):
            raise Problem("bad-request", "max_age must be a number of seconds from 0 to 86400")
        allow_stale = doc.get("allow_stale", True)
        if not isinstance(allow_stale, bool):
            raise Problem("bad-request", "allow_stale must be true or false")
        results = await self.gw.get_many(
            doc["ids"],
            max_age_s=None if max_age is None else float(max_age),
            allow_stale=allow_stale,
        )
        out: dict[str, Any] = {}
        for num_iid, lookup in results.items():
            if lookup.error is not None:
                problem = problem_for_error(lookup.error, num_iid, redact=self.gw.redact)
                out[num_iid] = {"error": problem.body(request.url.path, request_id_var.get())}
            else:
                out[num_iid] = lookup.to_dict()
        return json_response({"results": out})

    async def invalidate(self, request: Request) -> Response:
        self.ctx.client(request, admin=True)
        doc = await self._ids_body(request, frozenset())
        count = await self.gw.invalidate(doc["ids"])
        everywhere = self.gw.last_invalidation_everywhere
        log.info(
            "invalidated %d of %d ids", count, len(doc["ids"]), extra={"everywhere": everywhere}
        )
        answer: Invalidated = {"invalidated": count, "everywhere": everywhere}
        return json_response(answer)

    async def keys(self, request: Request) -> Response:
        self.ctx.client(request, admin=True)
        snap = self.gw.snapshot()
        answer: Keys = {
            "credentials": snap["credentials"],
            "egresses": snap["egresses"],
            "breaker": snap["breaker"],
        }
        return json_response(answer)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready or not self.gw.started:
            raise Problem(
                "unavailable",
                "starting or shutting down",
                headers={"Retry-After": "1"},
                retry_after=1,
            )
        stats = self.gw.stats()
        usable = sum(1 for c in stats.credentials if c["status"] in ("active", "banned"))
        redis = stats.replicas
        return json_response(
            {
                "status": "ready",
                "mode": "single" if redis is None else redis.mode,
                "live_replicas": 1 if redis is None else redis.live_replicas,
                "breaker": str(stats.breaker.state),
                "credentials": len(stats.credentials),
                "credentials_usable": usable,
                "degraded": stats.degrade.status.to_dict(),  # degraded is still ready
            }
        )

    async def metrics_route(self, request: Request) -> Response:
        if self.settings.server.metrics_token_required:
            self.clients.authenticate(
                request.headers.get("authorization"),
                request.client.host if request.client else None,
            )
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi_route(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")


_ITEM_PREFIX = ITEM_ROUTE.removesuffix("{num_iid}")


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _item_id(scope: Scope) -> str | None:
    """The id of a ``GET /v1/items/{num_iid}`` request, else ``None``."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(_ITEM_PREFIX):
        return None
    num_iid = path[len(_ITEM_PREFIX) :]
    return num_iid if num_iid and "/" not in num_iid else None


class _AsgiEndpoint:
    """Marks a bound method as a raw ASGI endpoint for Starlette's router (no Request wrapper)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class _Edge:
    """Request id, body, admission control, metrics and access log, as one pure ASGI layer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        metrics: Metrics,
        clients: Clients,
        item_endpoint: Callable[[Scope, Receive, Send], Any],
    ) -> None:
        self.app = app
        self.item_endpoint = item_endpoint
        self.clients = clients
        self.max_in_flight = settings.server.max_in_flight
        #: the largest body a job submission takes, and any other route (each route then
        #: checks its own, finer limit)
        self.max_job_body = job_body_limit(settings)
        self.max_body = settings.server.max_body_bytes
        self.body_timeout_s = settings.server.body_timeout_s
        self.metrics = metrics
        self.access = settings.server.access_log
        self.in_flight = 0
        self._prefix = os.urandom(3).hex()
        self._counter = 0

    async def _item(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.item_endpoint(scope, receive, send)
        except Exception:
            log.exception("unhandled error")
            problem = Problem("internal-error", "an unexpected error; see the server log")
            await problem.response(scope["path"], request_id_var.get())(scope, receive, send)

    def _authenticate(self, scope: Scope) -> None:
        """A 401 (or 429) problem, closing the connection, unless a known client is asking.

        The handler authenticates again and counts the request against the client's rate.
        """
        if self.clients.open:
            return
        authorization = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        try:
            self.clients.authenticate(authorization, _client_host(scope))
        except Problem as refused:
            refused.headers = {**refused.headers, "Connection": "close"}  # the body is unread
            raise

    def _body_limit(self, scope: Scope) -> int:
        if scope["path"] == "/v1/jobs" and scope["method"] == "POST":
            return self.max_job_body
        return self.max_body

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = str(value.decode("latin-1"))
                if _REQUEST_ID.fullmatch(text):
                    return text
                break
        self._counter += 1
        return f"{self._prefix}-{self._counter:x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        token = request_id_var.set(request_id)
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        guarded = scope["path"] not in _UNGUARDED
        template: str | None = None
        try:
            if has_body(scope):  # received whole before taking a slot: a slow body holds none
                try:
                    # only a known client may make the service hold a body (a job's is MBs)
                    self._authenticate(scope)
                    body = await receive_body(
                        scope, receive, limit=self._body_limit(scope), timeout_s=self.body_timeout_s
                    )
                except Problem as refused:
                    await refused.response(scope["path"], request_id)(scope, receive, send_with_id)
                    return
                except ClientGone:
                    status = 499  # nobody to answer (nginx's "client closed request")
                    return
                receive = replay(body, receive)
            if guarded and self.in_flight >= self.max_in_flight:
                self.metrics.shed.inc()
                problem = Problem(
                    "shed",
                    f"{self.in_flight} requests in progress; retry shortly",
                    headers={"Retry-After": "1"},
                    retry_after=1,
                )
                await problem.response(scope["path"], request_id)(scope, receive, send_with_id)
                return
            if guarded:
                self.in_flight += 1
            try:
                num_iid = _item_id(scope)
                if num_iid is None:
                    await self.app(scope, receive, send_with_id)
                else:
                    # the hot route goes straight to its endpoint, past Starlette's routing and
                    # exception layers (the router would send it to the same endpoint)
                    template = ITEM_ROUTE
                    scope["path_params"] = {"num_iid": num_iid}
                    await self._item(scope, receive, send_with_id)
            finally:
                if guarded:
                    self.in_flight -= 1
        finally:
            if template is None:
                template = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.observe(template, scope["method"], status, elapsed)
            if status >= 500 and status != 503:  # 503s are counted; their causes log themselves
                log.error(
                    "%s %s answered %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"status": status, "route": template},
                )
            if self.access:
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "route": template,
                    },
                )
            request_id_var.reset(token)


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
    api = _Api(ctx, metrics)
    jobs = JobRoutes(ctx)
    console = ConsoleRoutes(ctx)
    degrade = DegradeRoutes(ctx)
    metrics.watch(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        console.sampler.start()
        api.ready = True
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
                api.ready = False
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
            problem = problem_for_error(exc, redact=api.gw.redact)
            return problem.response(request.url.path, request_id_var.get())
        log.exception("unhandled error")
        return Problem("internal-error", "an unexpected error; see the server log").response(
            request.url.path, request_id_var.get()
        )

    groups: dict[str, object] = {"api": api, "jobs": jobs, "console": console, "degrade": degrade}
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
        _Edge, settings=settings, metrics=metrics, clients=clients, item_endpoint=api.get_item
    )
    app.state.service = service
    app.state.gateway = gateway
    app.state.metrics = metrics
    return app
