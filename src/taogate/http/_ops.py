"""What the platform and operators ask of the service itself: liveness (``/healthz``),
readiness (``/readyz``), Prometheus metrics, the OpenAPI document, and the credential pool with
the limits its keys share (``/v1/admin/keys``, operator clients only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from taogate.http._context import json_response
from taogate.http._openapi import openapi_document
from taogate.http._problems import Problem
from taogate.quota import CredentialStatus

if TYPE_CHECKING:
    from taogate.http._answers import Keys
    from taogate.http._context import Context
    from taogate.http._metrics import Metrics

__all__ = ["OpsRoutes"]


class OpsRoutes:
    """The probe, metrics, document and key-pool handlers of one app."""

    def __init__(self, ctx: Context, metrics: Metrics) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.gw = ctx.gw
        self.clients = ctx.clients
        self.metrics = metrics
        self.openapi = orjson.dumps(openapi_document(ctx.settings))
        #: set by the app's lifespan once the service has started, and cleared as it stops
        self.ready = False

    async def keys(self, request: Request) -> Response:
        self.ctx.client(request, admin=True)
        snap = self.gw.snapshot()
        answer: Keys = {
            "credentials": snap["credentials"],
            "egresses": snap["egresses"],
            "scopes": snap["scopes"],
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
        usable = sum(
            1
            for c in stats.pool.credentials
            if c.status in (CredentialStatus.ACTIVE, CredentialStatus.BANNED)
        )
        redis = stats.replicas
        return json_response(
            {
                "status": "ready",
                "mode": "single" if redis is None else redis.mode,
                "live_replicas": 1 if redis is None else redis.live_replicas,
                "breaker": str(stats.breaker.state),
                "credentials": len(stats.pool.credentials),
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
