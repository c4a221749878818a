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


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for a service run with ``settings``."""
    s = settings.server
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
                    ],
                    "responses": {
                        "200": {
                            "description": "The item",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Lookup"}
                                }
                            },
                        },
                        "404": _problem_response("The item does not exist"),
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


def _json_ok(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _schemas() -> dict[str, Any]:
    money = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal, yuan"}
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
        "Keys": {
            "type": "object",
            "required": ["credentials"],
            "properties": {
                "credentials": {"type": "array", "items": {"type": "object"}},
                "egresses": {"type": "array", "items": {"type": "object"}},
            },
        },
    }
