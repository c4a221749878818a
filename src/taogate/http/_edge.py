"""The edge: one pure ASGI layer in front of every route — request id, body, admission
control, metrics and access log — that sends ``GET /v1/items/{num_iid}`` straight to its
endpoint, past Starlette's routing and exception layers (ADR 007).

No ``BaseHTTPMiddleware``: a request passes one ``__call__`` and one ``send`` wrapper.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taogate._logging import request_id_var
from taogate.http._auth import client_host
from taogate.http._body import ClientGone, has_body, receive_body, replay
from taogate.http._jobs import job_body_limit
from taogate.http._problems import Problem
from taogate.http._routes import ITEM_ROUTE

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from taogate._settings import Settings
    from taogate.http._auth import Clients
    from taogate.http._metrics import Metrics

__all__ = ["Edge"]

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
_ITEM_PREFIX = ITEM_ROUTE.removesuffix("{num_iid}")


def _item_id(scope: Scope) -> str | None:
    """The id of a ``GET /v1/items/{num_iid}`` request, else ``None``."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(_ITEM_PREFIX):
        return None
    num_iid = path[len(_ITEM_PREFIX) :]
    return num_iid if num_iid and "/" not in num_iid else None


class Edge:
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
            self.clients.authenticate(authorization, client_host(scope))
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
