"""RFC 9457 problem details: every failure the service answers, as ``application/problem+json``.

Each problem has a stable ``type`` (``urn:taogate:problem:<slug>``, listed in
docs/http.md), the HTTP ``status``, a ``title``, a ``detail`` for this occurrence, the
``instance`` path and the ``request_id``; some carry ``num_iid`` or ``retry_after``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from taogate._errors import (
    BatchTooLarge,
    CredentialInvalid,
    InvalidRequest,
    ItemNotFound,
    ItemUnreadable,
    LookupFailed,
    ProtocolMismatch,
    RateLimited,
    UpstreamBadRequest,
    UpstreamTransient,
)
from taogate._masking import Redactor

if TYPE_CHECKING:
    from taogate._model import Lookup

__all__ = ["PROBLEM_TYPES", "Problem", "problem_for_error"]

#: slug -> (status, title)
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "invalid-item-id": (400, "Invalid item id"),
    "batch-too-large": (400, "Too many ids"),
    "unauthorized": (401, "Missing or unknown bearer token"),
    "forbidden": (403, "This client may not use this route"),
    "item-not-found": (404, "Item does not exist"),
    "job-not-found": (404, "No such job"),
    "not-found": (404, "No such route"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "The request was not received in time"),
    "until-passed": (409, "The time given has already passed"),
    "payload-too-large": (413, "Request body too large"),
    "upstream-rejected-id": (422, "The upstream refuses this item id"),
    "client-rate-limited": (429, "Client over its rate limit"),
    "job-limit-reached": (429, "Client at its limit of jobs in progress or ids a day"),
    "too-many-auth-failures": (429, "Too many failed authentications from this address"),
    "headers-too-large": (431, "Request headers too large"),
    "internal-error": (500, "Internal error"),
    "jobs-disabled": (501, "Bulk jobs are not enabled here"),
    "upstream-protocol": (502, "The upstream refused the gateway's requests"),
    "upstream-unreadable-item": (502, "The upstream's answer for this item cannot be used"),
    "unavailable": (503, "No answer within the deadline"),
    "shed": (503, "Too many requests in progress"),
}


class Problem(Exception):
    """A problem answer; raise it from a handler or build one with :func:`problem_for_error`."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = PROBLEM_TYPES[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extensions = {k: v for k, v in extensions.items() if v is not None}

    def body(self, instance: str, request_id: str | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:taogate:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if request_id is not None:
            doc["request_id"] = request_id
        doc.update(self.extensions)
        return doc

    def response(self, instance: str, request_id: str | None) -> Response:
        """The answer; no cache keeps it unless the problem's headers say otherwise."""
        return Response(
            orjson.dumps(self.body(instance, request_id)),
            status_code=self.status,
            headers={"Cache-Control": "no-store", **self.headers},
            media_type="application/problem+json",
        )


def _retry_headers(retry_after: float | None) -> tuple[dict[str, str], int]:
    seconds = max(1, math.ceil(retry_after)) if retry_after is not None else 1
    return {"Retry-After": str(seconds)}, seconds


def problem_for_error(
    error: BaseException, num_iid: str | None = None, *, redact: Redactor | None = None
) -> Problem:
    """The problem that answers a lookup's error (never leaking secrets or internals).

    Upstream text (a refusal's message and codes) is shown only through ``redact``, which
    takes every configured secret out and cuts it short (the default only cuts it).
    """
    clean = redact or Redactor()
    if isinstance(error, ItemNotFound):
        return Problem("item-not-found", str(error), num_iid=num_iid)
    if isinstance(error, InvalidRequest):
        slug = "batch-too-large" if isinstance(error, BatchTooLarge) else "invalid-item-id"
        return Problem(slug, str(error), num_iid=num_iid)
    if isinstance(error, UpstreamBadRequest):
        return Problem(
            "upstream-rejected-id",
            f"the upstream refuses item {num_iid}: {clean(error.message)}",
            num_iid=num_iid,
            upstream_code=_code(error.code, clean),
            upstream_sub_code=_code(error.sub_code, clean),
        )
    if isinstance(error, ItemUnreadable):
        return Problem(
            "upstream-unreadable-item",
            f"the upstream's answer for item {num_iid} cannot be used: {clean(error.reason)}",
            num_iid=num_iid,
        )
    if isinstance(error, ProtocolMismatch):
        return Problem(
            "upstream-protocol",
            "the upstream refused the gateway's request itself; an operator must check "
            "the upstream settings and the clock",
            upstream_code=error.code,
        )
    if isinstance(error, LookupFailed | UpstreamTransient | RateLimited | CredentialInvalid):
        retry = getattr(error, "retry_after", None)
        headers, seconds = _retry_headers(retry)
        detail = str(error) if isinstance(error, LookupFailed) else "the upstream is failing"
        return Problem(
            "unavailable",
            detail,
            headers=headers,
            num_iid=num_iid,
            retry_after=seconds,
            reason=type(error).__name__,
        )
    return Problem("internal-error", "an unexpected error; see the server log for this request id")


def _code(code: int | str | None, clean: Redactor) -> int | str | None:
    return clean(code) if isinstance(code, str) else code


def answer_or_problem(lookup: Lookup, num_iid: str, *, redact: Redactor | None = None) -> Lookup:
    """``lookup`` if it holds an item, else the problem to answer with (its error, or 404)."""
    if lookup.error is not None:
        raise problem_for_error(lookup.error, num_iid, redact=redact)
    if lookup.item is None:
        raise Problem("item-not-found", f"item {num_iid} does not exist", num_iid=num_iid)
    return lookup
