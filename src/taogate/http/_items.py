"""The item routes: ``GET /v1/items/{num_iid}`` (the hit path), ``POST /v1/items:batch`` and
``POST /v1/items:invalidate`` (operator clients only).

The single lookup is a bare ASGI endpoint that the edge calls directly, past Starlette's
router (ADR 007): on an L1 hit it is a dict lookup, a GCRA check and an ``orjson.dumps``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from taogate._errors import InvalidRequest
from taogate._logging import request_id_var
from taogate.http._auth import client_host
from taogate.http._context import json_response
from taogate.http._edge_cache import ItemCaching, etag_matches
from taogate.http._problems import Problem, problem_for_error

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from taogate.http._answers import Invalidated
    from taogate.http._context import Context

__all__ = ["ItemRoutes"]

log = logging.getLogger("taogate.http")

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


class ItemRoutes:
    """The lookup and invalidation handlers of one app."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.gw = ctx.gw
        self.clients = ctx.clients
        self.caching = ItemCaching(ctx.settings)

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
            client = self.clients.authenticate(authorization, client_host(scope))
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
        doc = await self.ctx.read_object(request, '{"ids": [...]}')
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
