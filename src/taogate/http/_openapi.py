"""The OpenAPI 3.1 document of the service, written by hand to match what the handlers do.

The schemathesis test in the suite holds the two together: every answer the service gives to
generated requests must be one this document allows.
"""

from __future__ import annotations

from typing import Any

import taogate
from taogate._settings import Settings

__all__ = ["openapi_document"]


def _problem_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
        }
    return response


def _item_caching(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The caching headers of a found item's 200, and the 304 (``[server.edge_cache]``)."""
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
    not_modified = {
        "description": "The item still matches If-None-Match: no body",
        "headers": {"ETag": headers["ETag"], "Cache-Control": headers["Cache-Control"]},
    }
    return headers, not_modified


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for a service run with ``settings``."""
    s = settings.server
    item_headers, not_modified = _item_caching(settings)
    policy = settings.upstream.id_pattern
    secured: list[dict[str, list[str]]] = [{"bearer": []}] if s.clients else []
    common = {
        "400": _problem_response("Bad input: an invalid id, a bad query value or body"),
        "401": _problem_response("Missing or unknown bearer token"),
        "429": _problem_response("The client is over its rate limit", retry_after=True),
        "503": _problem_response(
            "No answer within the deadline (quota backlog, breaker open, no usable key), "
            "or too many requests in progress",
            retry_after=True,
        ),
    }
    lookup_params = [
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
    ]

    def ids_body(extra: dict[str, Any]) -> dict[str, Any]:
        """A JSON body ``{"ids": [...]}`` with ``extra`` optional fields."""
        ids = {
            "type": "array",
            "minItems": 1,
            "maxItems": s.max_batch_ids,
            "items": {"type": "string", "pattern": f"^{policy}$"},
        }
        schema = {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": ids, **extra},
            "additionalProperties": False,
        }
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    degrade_ok = {
        "description": "The degraded-mode state",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Degrade"}}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "taogate",
            "version": taogate.__version__,
            "description": "Item lookups through a quota-aware gateway in front of the "
            "Taobao Open Platform. Failures are RFC 9457 problem details.",
        },
        "paths": {
            "/v1/items/{num_iid}": {
                "get": {
                    "operationId": "getItem",
                    "summary": "Look up one item",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "num_iid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": f"^{policy}$"},
                        },
                        *lookup_params,
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "required": False,
                            "description": "ETags (or *) the caller holds; a match answers 304.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The item",
                            "headers": item_headers,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Lookup"}
                                }
                            },
                        },
                        "304": not_modified,
                        "404": _problem_response(
                            "The item does not exist (cacheable for [server.edge_cache] "
                            "not_found_max_age_s)"
                        ),
                        "422": _problem_response("The upstream refuses this id"),
                        "502": _problem_response("The upstream refuses the gateway's requests"),
                        **common,
                    },
                }
            },
            "/v1/items:batch": {
                "post": {
                    "operationId": "getItems",
                    "summary": f"Look up to {s.max_batch_ids} items at once",
                    "security": secured,
                    "requestBody": ids_body(
                        {
                            "max_age": {"type": "number", "minimum": 0, "maximum": 86400},
                            "allow_stale": {"type": "boolean"},
                        }
                    ),
                    "responses": {
                        "200": {
                            "description": "One result per distinct id, in request order",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/BatchResult"}
                                }
                            },
                        },
                        "413": _problem_response("Request body too large"),
                        **common,
                    },
                }
            },
            "/v1/items:invalidate": {
                "post": {
                    "operationId": "invalidateItems",
                    "summary": "Forget cached answers (operator clients only)",
                    "security": secured,
                    "requestBody": ids_body({}),
                    "responses": {
                        "200": {
                            "description": "How many of the ids were cached",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["invalidated", "everywhere"],
                                        "properties": {
                                            "invalidated": {"type": "integer"},
                                            "everywhere": {
                                                "type": "boolean",
                                                "description": "false: Redis was out of "
                                                "reach and only this replica forgot them",
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        "403": _problem_response("Not an operator (admin) client"),
                        "413": _problem_response("Request body too large"),
                        **common,
                    },
                }
            },
            "/v1/admin/keys": {
                "get": {
                    "operationId": "keys",
                    "summary": "The credential pool's state (operator clients only)",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "One row per credential, app keys masked",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Keys"}
                                }
                            },
                        },
                        "401": common["401"],
                        "403": _problem_response("Not an operator (admin) client"),
                        "429": common["429"],
                        "503": common["503"],
                    },
                }
            },
            "/v1/admin/state": {
                "get": {
                    "operationId": "state",
                    "summary": "What the operator console shows, for scripts too (admin only)",
                    "description": (
                        "This replica's view now: limits mode and live replicas, breaker, code 7 "
                        "count, the quota and its use, each credential and egress (app keys "
                        "masked) with calls/s over the last seconds, the dispatcher's queue, "
                        "cache hit ratios, and a few minutes of history in 5 s steps."
                    ),
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "The state",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/State"}
                                }
                            },
                        },
                        "401": common["401"],
                        "403": _problem_response("Not an operator (admin) client"),
                        "429": common["429"],
                        "503": common["503"],
                    },
                }
            },
            "/v1/admin/items/{num_iid}": {
                "get": {
                    "operationId": "adminLookup",
                    "summary": "Look up one item, with the credential and egress that fetched it",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "num_iid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": f"^{policy}$"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The answer and its provenance",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/AdminLookup"}
                                }
                            },
                        },
                        "403": _problem_response("Not an operator (admin) client"),
                        "404": _problem_response("The item does not exist"),
                        "422": _problem_response("The upstream refuses this id"),
                        "502": _problem_response("The upstream refuses the gateway's requests"),
                        **common,
                    },
                }
            },
            "/v1/admin/degrade": {
                "get": {
                    "operationId": "getDegrade",
                    "summary": "Degraded mode: whether it is on, why, the override and the "
                    "schedule (operator clients only)",
                    "security": secured,
                    "responses": {
                        "200": degrade_ok,
                        "401": common["401"],
                        "403": _problem_response("Not an operator (admin) client"),
                        "429": common["429"],
                        "503": common["503"],
                    },
                },
                "put": {
                    "operationId": "setDegrade",
                    "summary": "Switch degraded mode on or off regardless of the schedule (until "
                    "a time), or back to auto; every replica follows (operator clients only)",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DegradeSwitch"}
                            }
                        },
                    },
                    "responses": {
                        "200": degrade_ok,
                        "403": _problem_response("Not an operator (admin) client"),
                        "409": _problem_response('"until" has already passed'),
                        "413": _problem_response("Request body too large"),
                        **common,
                        "503": _problem_response(
                            "Redis is out of reach, so the replicas cannot be told; nothing "
                            "changed",
                            retry_after=True,
                        ),
                    },
                },
            },
            **(
                _job_paths(settings, secured, common)
                if settings.redis.url and settings.jobs.enabled
                else {}  # without Redis every job route answers 501
            ),
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive",
                    "security": [],
                    "responses": {"200": _json_ok("Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Ready to serve lookups, with the gateway's mode",
                    "security": [],
                    "responses": {
                        "200": _json_ok("Ready"),
                        "503": _problem_response("Starting or shutting down", retry_after=True),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": secured if s.metrics_token_required else [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **({"401": common["401"]} if s.metrics_token_required else {}),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {},
            "schemas": _schemas(),
        },
    }
    return doc


def _job_paths(
    settings: Settings, secured: list[dict[str, list[str]]], common: dict[str, Any]
) -> dict[str, Any]:
    """``/v1/jobs``: a job is its owner's (another client gets 404), admins see every job."""
    jobs = settings.jobs
    policy = settings.upstream.id_pattern
    job_param = {
        "name": "job",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    unavailable = {
        "429": common["429"],
        "501": _problem_response("Bulk jobs are not enabled here (they need [redis])"),
        "503": _problem_response("Redis is out of reach", retry_after=True),
    }
    not_found = _problem_response("No such job, or it is another client's (the same answer)")
    status_ok = {
        "description": "The job's progress",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    }
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "submitJob",
                "summary": "Submit a bulk job of ids (owned by the submitting client)",
                "security": secured,
                "requestBody": {
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
                                        "items": {"type": "string", "pattern": f"^{policy}$"},
                                    }
                                },
                            }
                        },
                        "text/plain": {
                            "schema": {
                                "type": "string",
                                "description": "one id a line (LF or CRLF; blank lines allowed)",
                                "pattern": rf"^\s*(?:(?:{policy})[ \t\r]*\n\s*)*(?:{policy})\s*$",
                            }
                        },
                    },
                },
                "responses": {
                    "202": {
                        "description": "Queued: the job's status and its estimate",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": common["400"],
                    "401": common["401"],
                    "413": _problem_response(
                        "The body is larger than the id limits need (max_bytes says how large)"
                    ),
                    "429": _problem_response(
                        "The client is over its rate limit, or its jobs in progress or ids a "
                        "day (job-limit-reached)",
                        retry_after=True,
                    ),
                    "501": unavailable["501"],
                    "503": unavailable["503"],
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "The client's jobs (an admin's: every job), newest first",
                "security": secured,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Jobs",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["jobs"],
                                    "properties": {
                                        "jobs": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Job"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "400": common["400"],
                    "401": common["401"],
                    **unavailable,
                },
            },
        },
        "/v1/jobs/{job}": {
            "get": {
                "operationId": "getJob",
                "summary": "A job's progress",
                "security": secured,
                "parameters": [job_param],
                "responses": {
                    "200": status_ok,
                    "401": common["401"],
                    "404": not_found,
                    **unavailable,
                },
            },
            "delete": {
                "operationId": "cancelJob",
                "summary": "Cancel a job (rows so far stay readable)",
                "security": secured,
                "parameters": [job_param],
                "responses": {
                    "200": status_ok,
                    "401": common["401"],
                    "404": not_found,
                    **unavailable,
                },
            },
        },
        "/v1/jobs/{job}/results": {
            "get": {
                "operationId": "getJobResults",
                "summary": "One row per id: NDJSON, or CSV (formula cells escaped with ')",
                "security": secured,
                "parameters": [
                    job_param,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "description": "csv: CSV rows; anything else: NDJSON",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The rows, streamed",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "401": common["401"],
                    "404": not_found,
                    **unavailable,
                },
            }
        },
    }


def _json_ok(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _schemas() -> dict[str, Any]:
    money = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal, yuan"}
    reason = {"type": ["string", "null"], "maxLength": 200, "description": "logged; in /readyz"}
    text_or_null = {"type": ["string", "null"]}
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "request_id": {"type": "string"},
                "num_iid": {"type": "string"},
                "retry_after": {"type": "integer"},
            },
        },
        "Job": {
            "type": "object",
            "required": ["job", "state", "total", "done"],
            "properties": {
                "job": {"type": "string"},
                "owner": {"type": ["string", "null"]},
                "state": {
                    "type": "string",
                    "enum": ["queued", "running", "done", "cancelled", "failed"],
                },
                "total": {"type": "integer"},
                "done": {"type": "integer"},
                "found": {"type": "integer"},
                "not_found": {"type": "integer"},
                "failed": {"type": "integer"},
                "progress": {"type": "number"},
                "created": {"type": "number"},
                "finished": {"type": ["number", "null"]},
            },
        },
        "Item": {
            "type": "object",
            "required": ["num_iid", "title", "shop", "final_price_basis"],
            "properties": {
                "num_iid": {"type": "string"},
                "title": {"type": "string"},
                "shop": {"type": "string"},
                "reserve_price": money,
                "zk_final_price": money,
                "final_price": money,
                "final_price_basis": {
                    "type": "string",
                    "enum": ["final_promotion_price", "coupon", "discount"],
                },
                "coupon_amount": money,
                "coupon_start_fee": money,
                "pict_url": {"type": "string"},
                "item_url": {"type": "string"},
                "seller_id": {"type": "string"},
                "user_type": {"type": "integer"},
                "volume": {"type": "integer"},
            },
        },
        "Lookup": {
            "type": "object",
            "required": ["item", "source", "stale", "age_s"],
            "properties": {
                "item": {"$ref": "#/components/schemas/Item"},
                "source": {"type": "string", "enum": ["l1", "l2", "upstream"]},
                "stale": {"type": "boolean"},
                "age_s": {"type": "number", "minimum": 0},
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "object",
                    "additionalProperties": {
                        "oneOf": [
                            {
                                "type": "object",
                                "description": "an answer; item is null when it does not exist",
                                "required": ["item", "source", "stale", "age_s"],
                                "properties": {
                                    "item": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Item"},
                                            {"type": "null"},
                                        ]
                                    },
                                    "source": {"type": "string"},
                                    "stale": {"type": "boolean"},
                                    "age_s": {"type": "number"},
                                },
                            },
                            {
                                "type": "object",
                                "required": ["error"],
                                "properties": {"error": {"$ref": "#/components/schemas/Problem"}},
                            },
                        ]
                    },
                }
            },
        },
        "State": {
            "type": "object",
            "required": [
                "now",
                "replica",
                "breaker",
                "degraded",
                "code7",
                "quota",
                "credentials",
                "egresses",
                "queue",
                "cache",
                "history",
            ],
            "properties": {
                "now": {"type": "number", "description": "Unix time of the state"},
                "process": {
                    "type": "object",
                    "properties": {
                        "asyncio_tasks": {
                            "type": "integer",
                            "description": "tasks on this worker's event loop",
                        }
                    },
                },
                "replica": {
                    "type": "object",
                    "properties": {
                        "mode": {"type": "string", "enum": ["single", "shared", "local"]},
                        "live_replicas": {"type": ["integer", "null"]},
                        "id": {"type": ["string", "null"]},
                    },
                },
                "breaker": {"type": "string"},
                "degraded": {
                    "type": "object",
                    "description": "degraded mode as in /readyz (see /v1/admin/degrade)",
                },
                "code7": {"type": "integer", "description": "rate-limited answers seen here"},
                "quota": {
                    "type": "object",
                    "properties": {
                        "calls_per_s": {"type": "number"},
                        "rate": {"type": "number", "description": "calls/s the pool allows"},
                        "use": {"type": ["number", "null"]},
                    },
                },
                "credentials": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["credential", "egress", "status", "calls_per_s"],
                        "properties": {
                            "credential": {"type": "string", "description": "masked app key"},
                            "egress": {"type": "string"},
                            "status": {"type": "string"},
                            "calls_per_s": {"type": "number"},
                            "use": {"type": ["number", "null"]},
                            "rate": {"type": "number"},
                            "configured_qps": {"type": "number"},
                            "banned_for_s": {"type": "number"},
                            "probe_in_s": {"type": ["number", "null"]},
                            "calls_today": {"type": "integer"},
                            "daily_budget": {"type": ["integer", "null"]},
                            "cost": {"type": "string", "description": "exact decimal"},
                            "cost_today": {
                                "type": "string",
                                "description": "the Beijing day's calls x cost_per_call, exact",
                            },
                        },
                    },
                },
                "egresses": {"type": "array", "items": {"type": "object"}},
                "queue": {
                    "type": "object",
                    "properties": {
                        "interactive": {"type": "integer"},
                        "refresh": {"type": "integer"},
                        "bulk": {"type": "integer"},
                        "in_flight": {"type": "integer"},
                        "wait_ms": {"type": ["number", "null"]},
                    },
                },
                "cache": {"type": "object"},
                "window_s": {"type": "number"},
                "history": {
                    "type": "object",
                    "properties": {
                        name: {"type": "array", "items": {"type": ["number", "null"]}}
                        for name in ("t", "calls_per_s", "quota_per_s", "hit_ratio")
                    },
                },
            },
        },
        "AdminLookup": {
            "type": "object",
            "required": ["num_iid", "item", "source", "stale", "age_s", "fetched_by"],
            "properties": {
                "num_iid": {"type": "string"},
                "item": {"$ref": "#/components/schemas/Item"},
                "source": {"type": "string", "enum": ["l1", "l2", "upstream"]},
                "stale": {"type": "boolean"},
                "age_s": {"type": "number", "minimum": 0},
                "fetched_by": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "credential": {"type": "string"},
                                "egress": {"type": "string"},
                            },
                        },
                        {"type": "null"},
                    ]
                },
            },
        },
        "DegradeSwitch": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["mode"],
                    "additionalProperties": False,
                    "properties": {
                        "mode": {"type": "string", "enum": ["on", "off"]},
                        "until": {
                            "type": "string",
                            "format": "date-time",
                            "description": "RFC 3339 with its offset; the switch ends then",
                        },
                        "reason": reason,
                    },
                },
                {
                    "type": "object",
                    "required": ["mode"],
                    "additionalProperties": False,
                    "properties": {
                        "mode": {"type": "string", "const": "auto"},
                        "reason": reason,
                    },
                },
            ]
        },
        "Degrade": {
            "type": "object",
            "required": ["degraded", "override", "windows", "max_age_s", "reserve_share", "scope"],
            "properties": {
                "degraded": {
                    "type": "object",
                    "required": ["on", "source", "reason", "until"],
                    "properties": {
                        "on": {"type": "boolean"},
                        "source": {
                            "type": ["string", "null"],
                            "enum": ["manual", "schedule", None],
                        },
                        "reason": text_or_null,
                        "until": text_or_null,
                        "by": text_or_null,
                    },
                },
                "override": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["mode"],
                            "properties": {
                                "mode": {"type": "string", "enum": ["on", "off"]},
                                "until": text_or_null,
                                "reason": text_or_null,
                                "by": text_or_null,
                                "at": text_or_null,
                            },
                        },
                    ]
                },
                "windows": {"type": "array", "items": {"type": "object"}},
                "max_age_s": {"type": "number"},
                "reserve_share": {"type": "number", "minimum": 0, "maximum": 1},
                "scope": {"type": "string", "enum": ["process", "replicas"]},
            },
        },
        "Keys": {
            "type": "object",
            "required": ["credentials"],
            "properties": {
                "credentials": {"type": "array", "items": {"type": "object"}},
                "egresses": {"type": "array", "items": {"type": "object"}},
            },
        },
    }
