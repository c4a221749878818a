"""What every route module shares: the service (its gateway, replicas and jobs) and the clients,
and how a handler
authenticates its caller, reads a body, checks ids and answers JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from taogate._errors import InvalidRequest
from taogate.http._problems import Problem, problem_for_error

if TYPE_CHECKING:
    from taogate._service import Service
    from taogate._settings import Settings
    from taogate.http._auth import Client, Clients

__all__ = ["Context", "json_response"]


def json_response(doc: Any, status: int = 200) -> Response:
    """``doc`` as an ``application/json`` answer (orjson bytes; no response model)."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


class Context:
    """The settings, service and clients of one app, as its route handlers use them."""

    def __init__(self, settings: Settings, service: Service, clients: Clients) -> None:
        self.settings = settings
        self.service = service
        self.gw = service.gateway
        self.clients = clients

    def client(self, request: Request, *, admin: bool = False) -> Client:
        """The authenticated caller, counted against its rate; 403 unless an operator when
        ``admin``."""
        client = self.clients.authenticate(
            request.headers.get("authorization"), request.client.host if request.client else None
        )
        if admin and not client.admin:
            raise Problem("forbidden", f"client {client.name!r} is not an operator (admin)")
        self.clients.admit(client)
        return client

    async def read_body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body, refused with 413 past ``limit`` (``[server] max_body_bytes``)."""
        limit = self.settings.server.max_body_bytes if limit is None else limit
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Problem("payload-too-large", f"the body may hold at most {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem("payload-too-large", f"the body may hold at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_object(self, request: Request, shape: str) -> dict[str, Any]:
        """The request body as a JSON object; 400 naming ``shape`` (``{"ids": [...]}``) when it
        is not JSON or not an object."""
        body = await self.read_body(request)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Problem("bad-request", "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise Problem("bad-request", f"the body must be a JSON object {shape}")
        return doc

    def checked_ids(self, ids: object, limit: int, too_many: str) -> list[str]:
        """``ids`` if it is a non-empty list of at most ``limit`` ids within the id policy;
        else the 400 problem that says what is wrong (``too_many`` ends that message)."""
        if not isinstance(ids, list) or not ids:
            raise Problem("bad-request", '"ids" must be a non-empty array of strings')
        if len(ids) > limit:
            raise Problem("batch-too-large", f"{len(ids)} ids; {too_many}")
        policy = self.settings.upstream.id_policy
        for num_iid in ids:
            if not isinstance(num_iid, str):
                raise Problem("invalid-item-id", "every id must be a string")
            try:
                policy.check(num_iid)
            except InvalidRequest as exc:
                raise problem_for_error(exc, num_iid) from None
        return ids
