"""``/v1/jobs``: submit a large id list, follow it, stream its rows, cancel it."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from taogate._errors import InvalidRequest
from taogate.http._problems import Problem

if TYPE_CHECKING:
    from taogate._settings import Settings
    from taogate.http._app import _Api

__all__ = ["JobRoutes", "job_body_limit"]

CSV_COLUMNS = (
    "num_iid",
    "status",
    "final_price",
    "final_price_basis",
    "zk_final_price",
    "reserve_price",
    "title",
    "error",
)


def job_body_limit(settings: Settings) -> int:
    """Largest job submission body in bytes: ``[jobs] max_ids`` ids of up to 21 digits a line."""
    return max(settings.server.max_body_bytes, settings.jobs.max_ids * 22)


class JobRoutes:
    """The job handlers of one app."""

    def __init__(self, api: _Api) -> None:
        self.api = api

    def _store(self) -> Any:
        gw = self.api.gw
        if gw.jobs is None:
            raise Problem("jobs-disabled", "bulk jobs need [redis] url (and [jobs] enabled)")
        if gw.shared is None or gw.shared.mode != "shared":
            raise Problem(
                "unavailable",
                "Redis is out of reach; bulk jobs wait for it",
                headers={"Retry-After": "5"},
                retry_after=5,
            )
        return gw.jobs

    async def _ids(self, request: Request) -> list[str]:
        """Distinct ids from a JSON body or a text body of one id a line (400 names the line)."""
        jobs = self.api.settings.jobs
        body = await self.api._read_body(request, limit=job_body_limit(self.api.settings))
        policy = self.api.settings.upstream.id_policy
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Problem("bad-request", "the body is not valid JSON") from None
            ids = self.api.checked_ids(
                doc.get("ids") if isinstance(doc, dict) else None,
                jobs.max_json_ids,
                f"a JSON body takes at most {jobs.max_json_ids} (send a text body for more)",
            )
            return list(dict.fromkeys(ids))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem("bad-request", "the file is not UTF-8 text") from None
        seen: dict[str, None] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            num_iid = line.strip()
            if not num_iid:
                continue  # blank lines are allowed
            try:
                policy.check(num_iid)
            except InvalidRequest as exc:
                raise Problem("invalid-item-id", f"line {number}: {exc}", line=number) from None
            seen[num_iid] = None
            if len(seen) > jobs.max_ids:
                raise Problem(
                    "batch-too-large", f"line {number}: more than {jobs.max_ids} ids", line=number
                )
        if not seen:
            raise Problem("bad-request", "the file holds no ids (one id a line)")
        return list(seen)

    async def _estimate(self, ids: list[str]) -> dict[str, Any]:
        """Upstream calls still needed (what the cache holds fresh is left out), time, cost."""
        gw = self.api.gw
        cache = gw.cache
        view = cache.lookup(ids, max_age_s=cache.max_age_s, max_stale_s=None)
        missing = view.missing
        if gw.shared is not None and missing:
            held: set[str] = set()
            for i in range(0, len(missing), 5000):
                found = await gw.shared.l2_get(missing[i : i + 5000])
                now = gw._clock()
                held.update(k for k, e in found.items() if now < e.fresh_until)
            missing = [i for i in missing if i not in held]
        calls = math.ceil(len(missing) / gw.dispatcher.max_batch)
        total = gw.pool.total_rate()
        spare = max(0.0, total - gw.dispatcher.interactive_load())
        creds = gw.pool.credentials
        per_call = sum((c.cost_per_call for c in creds), Decimal(0)) / len(creds)
        return {
            "ids": len(ids),
            "fresh_in_cache": len(ids) - len(missing),
            "upstream_calls": calls,
            "spare_calls_per_s": round(spare, 2),
            "seconds": None if spare <= 0 else round(calls / spare, 1),
            "cost": str((per_call * calls).quantize(Decimal("0.0001"))),
        }

    async def submit(self, request: Request) -> Response:
        self.api._client(request)
        store = self._store()
        ids = await self._ids(request)
        estimate = await self._estimate(ids)
        job = await store.submit(ids)
        status = await store.status(job)
        body = {**status.to_dict(), "estimate": estimate}
        return Response(
            orjson.dumps(body),
            status_code=202,
            media_type="application/json",
            headers={"Location": f"/v1/jobs/{job}"},
        )

    async def status(self, request: Request) -> Response:
        self.api._client(request)
        status = await self._store().status(request.path_params["job"])
        if status is None:
            raise Problem("job-not-found", "no such job (or it expired)")
        return Response(orjson.dumps(status.to_dict()), media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        self.api._client(request)
        status = await self._store().cancel(request.path_params["job"])
        if status is None:
            raise Problem("job-not-found", "no such job (or it expired)")
        return Response(orjson.dumps(status.to_dict()), media_type="application/json")

    async def results(self, request: Request) -> Response:
        self.api._client(request)
        store = self._store()
        job = request.path_params["job"]
        if await store.status(job) is None:
            raise Problem("job-not-found", "no such job (or it expired)")
        want_csv = request.query_params.get("format") == "csv" or "text/csv" in request.headers.get(
            "accept", ""
        )

        async def ndjson() -> AsyncIterator[bytes]:
            async for row in store.rows(job):
                yield row + b"\n"

        async def as_csv() -> AsyncIterator[bytes]:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            async for raw in store.rows(job):
                row = orjson.loads(raw)
                item = row.get("item") or {}
                writer.writerow(
                    [
                        row.get("num_iid"),
                        row.get("status"),
                        *(item.get(c, "") for c in CSV_COLUMNS[2:7]),
                        row.get("error", ""),
                    ]
                )
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()

        if want_csv:
            return StreamingResponse(as_csv(), media_type="text/csv")
        return StreamingResponse(ndjson(), media_type="application/x-ndjson")
