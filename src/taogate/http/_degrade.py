"""``/v1/admin/degrade``: see and switch degraded mode (operator clients only).

``PUT`` takes ``{"mode": "on" | "off" | "auto", "until": RFC 3339, "reason": text}``: ``on`` and
``off`` overrule the schedule (until ``until``, if given), ``auto`` hands back to it. With Redis
every replica follows within a heartbeat (at once through pub/sub); without it the switch holds
for this process only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from taogate._degrade import MAX_REASON, parse_time
from taogate._errors import DegradeNotShared
from taogate.http._problems import Problem

if TYPE_CHECKING:
    from taogate.http._context import Context

__all__ = ["DegradeRoutes"]

_FIELDS = frozenset({"mode", "until", "reason"})


class DegradeRoutes:
    """The degraded-mode handlers of one app."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _state(self) -> dict[str, Any]:
        gw = self.ctx.gw
        control = gw.degrade
        override = control.override
        return {
            "degraded": control.status().to_dict(who=True),
            "override": None if override is None else override.to_dict(),
            "windows": [w.to_dict() for w in control.windows],
            "max_age_s": control.max_age_s,
            "reserve_share": control.reserve_share,
            "scope": "process" if gw.replicas is None else "replicas",
        }

    async def route(self, request: Request) -> Response:
        """One route for both methods, so that a 405 names them both in ``Allow``."""
        if request.method == "PUT":
            return await self.switch(request)
        return await self.show(request)

    async def show(self, request: Request) -> Response:
        self.ctx.client(request, admin=True)
        return Response(orjson.dumps(self._state()), media_type="application/json")

    async def switch(self, request: Request) -> Response:
        client = self.ctx.client(request, admin=True)
        doc = await self.ctx.read_object(request, '{"mode": ...}')
        unknown = set(doc) - _FIELDS
        if unknown:
            raise Problem("bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
        mode = doc.get("mode")
        if mode not in ("on", "off", "auto"):
            raise Problem("bad-request", '"mode" must be "on", "off" or "auto"')
        reason = doc.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
            raise Problem(
                "bad-request", f'"reason" must be text of at most {MAX_REASON} characters'
            )
        until: float | None = None
        if "until" in doc:
            if mode == "auto":
                raise Problem("bad-request", '"until" goes with "on" or "off", not "auto"')
            if not isinstance(doc["until"], str):
                raise Problem("bad-request", '"until" must be an RFC 3339 date-time string')
            try:
                until = parse_time(doc["until"])
            except ValueError as exc:
                raise Problem("bad-request", f'"until": {exc}') from None
        try:
            await self.ctx.gw.degrade.set(mode, until=until, reason=reason or None, by=client.name)
        except ValueError as exc:  # "until" has passed
            raise Problem("until-passed", str(exc)) from None
        except DegradeNotShared as exc:
            raise Problem(
                "unavailable",
                f"{exc}; nothing changed (the schedule still applies)",
                headers={"Retry-After": "1"},
                retry_after=1,
                reason="DegradeNotShared",
            ) from None
        return Response(orjson.dumps(self._state()), media_type="application/json")
