"""A request's body, received whole before the request takes an in-flight slot.

A client that sends its body slowly (a byte a second) must not hold one of the
``[server] max_in_flight`` slots meanwhile, nor keep a connection for ever: the edge receives
the whole body first, within ``[server] body_timeout_s`` (else 408) and the largest size any
route takes (else 413), and hands the handlers a ``receive`` that replays it. Both answers close
the connection, since the rest of the body is still on its way.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope

from taogate.http._problems import Problem

__all__ = ["ClientGone", "has_body", "receive_body", "replay"]

_CLOSE = {"Connection": "close"}


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero ``Content-Length`` or chunked)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None


async def receive_body(scope: Scope, receive: Receive, *, limit: int, timeout_s: float) -> bytes:
    """The whole body; a 408 or 413 problem (closing the connection), or :class:`ClientGone`."""
    too_large = Problem(
        "payload-too-large",
        f"the body may hold at most {limit} bytes",
        headers=_CLOSE,
        max_bytes=limit,
    )
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise Problem(
            "request-timeout",
            f"the body did not arrive within {timeout_s:g} s",
            headers=_CLOSE,
        ) from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` in one message, then waits on ``receive``."""
    pending = True

    async def receive_replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_replayed
