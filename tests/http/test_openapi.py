"""The OpenAPI document and the app are built from one route table, and its schemas from the
models: every route is documented (or hidden on purpose) and every documented path is served;
the Item schema is ``_model.Item``; real answers match their documented schemas."""

from __future__ import annotations

import dataclasses
import types
import typing
from decimal import Decimal
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.routing import Route

from taogate import Settings
from taogate._model import Item
from taogate.http import create_app
from taogate.testing import FakeProvider
from taogate.testing._fakes import make_item
from tests.conftest import RedisServer
from tests.shared.test_job_owners import auth, service, wait_done
from tests.shared.test_job_owners import settings as job_settings

#: served, and left out of the document on purpose: the console's page and files, the document
HIDDEN = {"/console", "/console/{name}", "/openapi.json"}
JOB_PATHS = {"/v1/jobs", "/v1/jobs/{job}", "/v1/jobs/{job}/results"}
TOKEN = "openapi-test-client-token-0000000001"


def make_settings(*, redis: bool) -> Settings:
    return Settings(
        credentials=[{"app_key": "95000001", "secret": "openapi-test-secret", "qps": 10}],
        redis={"url": "redis://127.0.0.1:1/0"} if redis else {},
        server={"clients": [{"name": "site", "token": TOKEN}]},
    )


async def served_and_documented(
    settings: Settings,
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Starlette's routes and the document's paths of an app, each as path -> methods."""
    app = create_app(settings)
    served = {r.path: set(r.methods or ()) - {"HEAD"} for r in app.routes if isinstance(r, Route)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
        resp = await client.get("/openapi.json")  # needs no started gateway
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    documented = {path: {m.upper() for m in ops} for path, ops in paths.items()}
    return served, documented


@pytest.mark.parametrize("redis", [True, False], ids=["jobs", "no-jobs"])
async def test_every_route_is_documented_and_every_documented_path_is_served(
    redis: bool,
) -> None:
    served, documented = await served_and_documented(make_settings(redis=redis))
    # the job routes are served either way (501 without Redis), documented where jobs can run
    hidden = HIDDEN if redis else HIDDEN | JOB_PATHS
    assert set(served) >= JOB_PATHS
    assert {p: m for p, m in served.items() if p not in hidden} == documented
    assert hidden <= set(served)


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` refs resolve in ``doc``."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


async def document() -> dict[str, Any]:
    app = create_app(make_settings(redis=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taogate") as client:
        doc: dict[str, Any] = (await client.get("/openapi.json")).json()
    return doc


async def test_the_item_schema_is_the_model() -> None:
    doc = await document()
    item = component(doc, "Item")
    hints = typing.get_type_hints(Item)
    fields = [f.name for f in dataclasses.fields(Item)]

    def may_be_none(name: str) -> bool:
        hint = hints[name]
        return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)

    assert set(item["properties"]) == set(fields)
    # to_dict leaves None out: what cannot be None is required, and nothing is null
    assert item["required"] == [name for name in fields if not may_be_none(name)]
    for name in fields:
        if Decimal in typing.get_args(hints[name]) or hints[name] is Decimal:
            assert item["properties"][name]["type"] == "string"
            assert item["properties"][name]["pattern"] == r"^-?\d+(\.\d+)?$"
    check = validator(doc, {"$ref": "#/components/schemas/Item"})
    plain = make_item("123456", "19.90").to_dict()
    check.validate(plain)
    check.validate(dataclasses.replace(make_item("7"), volume=3, user_type=1).to_dict())
    assert not check.is_valid(plain | {"volume": None})  # absent, never null
    assert not check.is_valid(plain | {"final_price": 19.9})  # money is exact text
    assert not check.is_valid(plain | {"final_price_basis": "guess"})
    del plain["title"]
    assert not check.is_valid(plain)


async def test_problems_keep_their_extensions() -> None:
    doc = await document()
    check = validator(doc, {"$ref": "#/components/schemas/Problem"})
    problem = {"type": "urn:taogate:problem:unavailable", "title": "t", "status": 503}
    check.validate(problem | {"reason": "UpstreamTransient", "upstream_code": 7})
    failure = validator(doc, {"$ref": "#/components/schemas/Failure"})
    assert not failure.is_valid({"error": problem, "item": None})  # one of answer or error


def answer_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["paths"][path][method]["responses"][status]["content"][
        "application/json"
    ]["schema"]
    return schema


@pytest.mark.integration
async def test_job_answers_match_the_document(redis_server: RedisServer) -> None:
    provider = FakeProvider.with_ids(["7"])
    async for client in service(job_settings(redis_server.url), provider):
        doc = (await client.get("/openapi.json")).json()
        submitted = await client.post(
            "/v1/jobs", content=b"7\n8\n", headers={**auth("alice"), "content-type": "text/plain"}
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()["job"]
        await wait_done(client, job, "alice")
        status = await client.get(f"/v1/jobs/{job}", headers=auth("alice"))
        listed = await client.get("/v1/jobs", headers=auth("alice"))
        cancelled = await client.delete(f"/v1/jobs/{job}", headers=auth("alice"))
    answers = [
        ("/v1/jobs", "post", "202", submitted),
        ("/v1/jobs/{job}", "get", "200", status),
        ("/v1/jobs", "get", "200", listed),
        ("/v1/jobs/{job}", "delete", "200", cancelled),
    ]
    for path, method, code, resp in answers:
        assert str(resp.status_code) == code, resp.text
        validator(doc, answer_schema(doc, path, method, code)).validate(resp.json())
    assert set(submitted.json()["estimate"]) == set(component(doc, "Estimate")["properties"])
