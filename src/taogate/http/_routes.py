"""The service's routes, listed once: path, handler, methods and what each method answers.

``create_app`` builds Starlette's routes from this table and ``openapi_document`` the
document's paths, so neither can name a route the other lacks. Answer schemas are named by
their type in ``_answers`` (the document generates them); failures are problem details, listed
by status with what each status means on that route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taogate._settings import Settings

__all__ = ["ITEM_ROUTE", "Operation", "RouteSpec", "route_table"]

#: the hit path: the edge calls its endpoint directly, past Starlette's router (ADR 007)
ITEM_ROUTE = "/v1/items/{num_iid}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One method of a route, as the OpenAPI document describes it."""

    id: str
    summary: str
    description: str | None = None
    #: needs a client's bearer token when ``[[server.clients]]`` are configured
    authenticated: bool = True
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None
    #: the answers that are not problems, by status
    ok: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    #: the problem details it may answer, by status (429 and 503 carry ``Retry-After``)
    problems: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """A route: its path, its handler (``"<group>.<method>"``, see ``create_app``) and its
    methods with their operations."""

    path: str
    handler: str
    operations: Mapping[str, Operation]
    #: a raw ASGI endpoint (no ``Request`` wrapper)
    asgi: bool = False
    #: in the OpenAPI document (the console's page and files and the document itself are not)
    documented: bool = True

    @property
    def methods(self) -> list[str]:
        return [method.upper() for method in self.operations]


def json_answer(description: str, schema: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A JSON answer whose schema is the component ``schema`` (or that schema itself)."""
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, **extra, "content": {"application/json": {"schema": ref}}}


_AUTH = {
    "401": "Missing or unknown bearer token",
    "429": "The client is over its rate limit",
    "503": "No answer within the deadline (quota backlog, breaker open, no usable key), "
    "or too many requests in progress",
}
_COMMON = {"400": "Bad input: an invalid id, a bad query value or body", **_AUTH}
_ADMIN = {**_AUTH, "403": "Not an operator (admin) client"}
_UPSTREAM = {
    "422": "The upstream refuses this id",
    "502": "The upstream refuses the gateway's requests",
}
_TOO_LARGE = {"413": "Request body too large"}
_JOBS_OFF = {
    "501": "Bulk jobs are not enabled here (they need [redis])",
    "503": "Redis is out of reach",
}
_NO_JOB = {"404": "No such job, or it is another client's (the same answer)"}
#: the one method of a route the document leaves out (only its method counts)
_UNDOCUMENTED = Operation(id="", summary="", authenticated=False)


def _item_answers(settings: Settings) -> dict[str, dict[str, Any]]:
    """A found item's 200 with its caching headers, and the 304 (``[server.edge_cache]``)."""
    edge = settings.server.edge_cache.enabled
    headers: dict[str, Any] = {
        "Cache-Control": {
            "schema": {"type": "string"},
            "required": edge,
            "description": "public, max-age=<remaining freshness, 0 when stale>, "
            "stale-while-revalidate=<s>, stale-if-error=<s>",
        },
        "ETag": {
            "schema": {"type": "string", "pattern": r'^W/"[0-9a-f]+"$'},
            "required": edge,
            "description": "Weak tag of the item's content (the same on every replica)",
        },
        "Last-Modified": {
            "schema": {"type": "string"},
            "required": edge,
            "description": "When the item was fetched from the upstream (HTTP date)",
        },
    }
    return {
        "200": json_answer("The item", "Lookup", headers=headers),
        "304": {
            "description": "The item still matches If-None-Match: no body",
            "headers": {"ETag": headers["ETag"], "Cache-Control": headers["Cache-Control"]},
        },
    }


def route_table(settings: Settings) -> list[RouteSpec]:
    """Every route of a service run with ``settings``, in the order Starlette matches them."""
    s = settings.server
    jobs = settings.jobs
    id_schema = {"type": "string", "pattern": f"^{settings.upstream.id_pattern}$"}
    num_iid = {"name": "num_iid", "in": "path", "required": True, "schema": id_schema}
    lookup_params = (
        {
            "name": "max_age",
            "in": "query",
            "required": False,
            "description": "Oldest acceptable answer, seconds (default from [cache] max_age_s).",
            "schema": {"type": "number", "minimum": 0, "maximum": 86400},
        },
        {
            "name": "allow_stale",
            "in": "query",
            "required": False,
            "description": "Serve a stale answer (flagged) when the upstream cannot answer.",
            "schema": {"type": "boolean", "default": True},
        },
    )

    def ids_body(limit: int, **extra: Any) -> dict[str, Any]:
        """A JSON body ``{"ids": [...]}`` of at most ``limit`` ids, with ``extra`` fields."""
        ids = {"type": "array", "minItems": 1, "maxItems": limit, "items": id_schema}
        schema = {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": ids, **extra},
            "additionalProperties": False,
        }
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    degrade = json_answer("The degraded-mode state", "Degrade")
    job = {
        "name": "job",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    job_status = json_answer("The job's progress", "Job")
    one = settings.upstream.id_pattern
    text_ids = rf"^\s*(?:(?:{one})[ \t\r]*\n\s*)*(?:{one})\s*$"
    # without Redis every job route answers 501: documented only where jobs can run
    jobs_on = bool(settings.redis.url and jobs.enabled)
    return [
        RouteSpec(
            path=ITEM_ROUTE,
            handler="items.get_item",
            asgi=True,
            operations={
                "get": Operation(
                    id="getItem",
                    summary="Look up one item",
                    parameters=(
                        num_iid,
                        *lookup_params,
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "required": False,
                            "description": "ETags (or *) the caller holds; a match answers 304.",
                            "schema": {"type": "string"},
                        },
                    ),
                    ok=_item_answers(settings),
                    problems={
                        **_COMMON,
                        "404": "The item does not exist (cacheable for [server.edge_cache] "
                        "not_found_max_age_s)",
                        **_UPSTREAM,
                    },
                )
            },
        ),
        RouteSpec(
            path="/v1/items:batch",
            handler="items.batch",
            operations={
                "post": Operation(
                    id="getItems",
                    summary=f"Look up to {s.max_batch_ids} items at once",
                    body=ids_body(
                        s.max_batch_ids,
                        max_age={"type": "number", "minimum": 0, "maximum": 86400},
                        allow_stale={"type": "boolean"},
                    ),
                    ok={
                        "200": json_answer(
                            "One result per distinct id, in request order", "BatchResult"
                        )
                    },
                    problems={**_COMMON, **_TOO_LARGE},
                )
            },
        ),
        RouteSpec(
            path="/v1/items:invalidate",
            handler="items.invalidate",
            operations={
                "post": Operation(
                    id="invalidateItems",
                    summary="Forget cached answers (operator clients only)",
                    body=ids_body(s.max_batch_ids),
                    ok={"200": json_answer("How many of the ids were cached", "Invalidated")},
                    problems={**_COMMON, **_ADMIN, **_TOO_LARGE},
                )
            },
        ),
        RouteSpec(
            path="/v1/admin/keys",
            handler="ops.keys",
            operations={
                "get": Operation(
                    id="keys",
                    summary="The credential pool's state (operator clients only)",
                    ok={"200": json_answer("One row per credential, app keys masked", "Keys")},
                    problems=_ADMIN,
                )
            },
        ),
        RouteSpec(
            path="/v1/admin/state",
            handler="console.state",
            operations={
                "get": Operation(
                    id="state",
                    summary="What the operator console shows, for scripts too (admin only)",
                    description=(
                        "This replica's view now: limits mode and live replicas, breaker, code 7 "
                        "count, the quota and its use, each credential and egress (app keys "
                        "masked) with calls/s over the last seconds, the dispatcher's queue, "
                        "cache hit ratios, and a few minutes of history in 5 s steps."
                    ),
                    ok={"200": json_answer("The state", "State")},
                    problems=_ADMIN,
                )
            },
        ),
        RouteSpec(
            path="/v1/admin/items/{num_iid}",
            handler="console.lookup",
            operations={
                "get": Operation(
                    id="adminLookup",
                    summary="Look up one item, with the credential and egress that fetched it",
                    parameters=(num_iid,),
                    ok={"200": json_answer("The answer and its provenance", "AdminLookup")},
                    problems={
                        **_COMMON,
                        **_ADMIN,
                        "404": "The item does not exist",
                        **_UPSTREAM,
                    },
                )
            },
        ),
        RouteSpec(
            path="/console",
            handler="console.page",
            operations={"get": _UNDOCUMENTED},
            documented=False,
        ),
        RouteSpec(
            path="/console/{name}",
            handler="console.asset",
            operations={"get": _UNDOCUMENTED},
            documented=False,
        ),
        RouteSpec(
            path="/v1/admin/degrade",
            handler="degrade.route",
            operations={
                "get": Operation(
                    id="getDegrade",
                    summary="Degraded mode: whether it is on, why, the override and the "
                    "schedule (operator clients only)",
                    ok={"200": degrade},
                    problems=_ADMIN,
                ),
                "put": Operation(
                    id="setDegrade",
                    summary="Switch degraded mode on or off regardless of the schedule (until "
                    "a time), or back to auto; every replica follows (operator clients only)",
                    body={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DegradeSwitch"}
                            }
                        },
                    },
                    ok={"200": degrade},
                    problems={
                        **_COMMON,
                        **_ADMIN,
                        "409": '"until" has already passed',
                        **_TOO_LARGE,
                        "503": "Redis is out of reach, so the replicas cannot be told; nothing "
                        "changed",
                    },
                ),
            },
        ),
        RouteSpec(
            path="/v1/jobs",
            handler="jobs.collection",
            documented=jobs_on,
            operations={
                "post": Operation(
                    id="submitJob",
                    summary="Submit a bulk job of ids (owned by the submitting client)",
                    body={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["ids"],
                                    "properties": {
                                        "ids": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": jobs.max_json_ids,
                                            "items": id_schema,
                                        }
                                    },
                                }
                            },
                            "text/plain": {
                                "schema": {
                                    "type": "string",
                                    "description": "one id a line (LF or CRLF; blank lines "
                                    "allowed)",
                                    "pattern": text_ids,
                                }
                            },
                        },
                    },
                    ok={
                        "202": json_answer(
                            "Queued: the job's status and its estimate",
                            "SubmittedJob",
                            headers={"Location": {"schema": {"type": "string"}}},
                        )
                    },
                    problems={
                        **_COMMON,
                        **_JOBS_OFF,
                        "413": "The body is larger than the id limits need (max_bytes says "
                        "how large)",
                        "429": "The client is over its rate limit, or its jobs in progress or "
                        "ids a day (job-limit-reached)",
                    },
                ),
                "get": Operation(
                    id="listJobs",
                    summary="The client's jobs (an admin's: every job), newest first",
                    parameters=(
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ),
                    ok={"200": json_answer("Jobs", "Jobs")},
                    problems={**_COMMON, **_JOBS_OFF},
                ),
            },
        ),
        RouteSpec(
            path="/v1/jobs/{job}",
            handler="jobs.one",
            documented=jobs_on,
            operations={
                "get": Operation(
                    id="getJob",
                    summary="A job's progress",
                    parameters=(job,),
                    ok={"200": job_status},
                    problems={**_AUTH, **_JOBS_OFF, **_NO_JOB},
                ),
                "delete": Operation(
                    id="cancelJob",
                    summary="Cancel a job (rows so far stay readable)",
                    parameters=(job,),
                    ok={"200": job_status},
                    problems={**_AUTH, **_JOBS_OFF, **_NO_JOB},
                ),
            },
        ),
        RouteSpec(
            path="/v1/jobs/{job}/results",
            handler="jobs.results",
            documented=jobs_on,
            operations={
                "get": Operation(
                    id="getJobResults",
                    summary="One row per id: NDJSON, or CSV (formula cells escaped with ')",
                    parameters=(
                        job,
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "description": "csv: CSV rows; anything else: NDJSON",
                            "schema": {"type": "string"},
                        },
                    ),
                    ok={
                        "200": {
                            "description": "The rows, streamed",
                            "content": {
                                "application/x-ndjson": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        }
                    },
                    problems={**_AUTH, **_JOBS_OFF, **_NO_JOB},
                )
            },
        ),
        RouteSpec(
            path="/healthz",
            handler="ops.healthz",
            operations={
                "get": Operation(
                    id="healthz",
                    summary="The process is alive",
                    authenticated=False,
                    ok={"200": json_answer("Alive", {"type": "object"})},
                )
            },
        ),
        RouteSpec(
            path="/readyz",
            handler="ops.readyz",
            operations={
                "get": Operation(
                    id="readyz",
                    summary="Ready to serve lookups, with the gateway's mode",
                    authenticated=False,
                    ok={"200": json_answer("Ready", {"type": "object"})},
                    problems={"503": "Starting or shutting down"},
                )
            },
        ),
        RouteSpec(
            path="/metrics",
            handler="ops.metrics_route",
            operations={
                "get": Operation(
                    id="metrics",
                    summary="Prometheus metrics",
                    authenticated=s.metrics_token_required,
                    ok={
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    problems={"401": _AUTH["401"]} if s.metrics_token_required else {},
                )
            },
        ),
        RouteSpec(
            path="/openapi.json",
            handler="ops.openapi_route",
            operations={"get": _UNDOCUMENTED},
            documented=False,
        ),
    ]
