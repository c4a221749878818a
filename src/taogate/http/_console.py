"""The operator console: one page and the JSON state it polls.

``GET /console`` serves a page whose assets ship inside the package (no CDN, no build step).
The page keeps an admin token in the browser's session storage (never in a URL) and polls
``GET /v1/admin/state`` about once a second. The state is what this replica knows now, plus
rates over the last seconds and a few minutes of history from a sampler that reads the
gateway's counters once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from taogate._errors import InvalidRequest
from taogate.http._problems import Problem, answer_or_problem, problem_for_error

if TYPE_CHECKING:
    from taogate._gateway import Gateway
    from taogate._gateway_stats import GatewayStats
    from taogate.http._answers import History, State
    from taogate.http._context import Context

__all__ = ["ConsoleRoutes", "Sampler"]

#: the page's files, served from the package
_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
#: the page runs only our own script and style, and talks only to this origin
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
RATE_WINDOW_S = 5.0
HISTORY_S = 300
HISTORY_STEP_S = 5


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # monotonic
    calls_ok: int
    lookups: int
    l1_hits: int
    l2_hits: int
    stale: int
    waits: int
    wait_sum_s: float
    quota: float  # calls/s the pool allowed at that moment
    by_credential: dict[str, int]
    by_egress: dict[str, int]
    by_scope: dict[tuple[str, str], int]  # (kind, name)


class Sampler:
    """Reads the gateway's counters every ``period_s`` and keeps the last ``keep`` samples."""

    def __init__(self, gateway: Gateway, *, period_s: float = 1.0, keep: int = HISTORY_S + 10):
        self._gw = gateway
        self._period = period_s
        self._samples: deque[_Sample] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._period)

    def sample(self) -> _Sample:
        """Take and keep one sample now (the loop does this every period; tests may too)."""
        sample = self.read(self._gw.stats())
        self._samples.append(sample)
        return sample

    def read(self, stats: GatewayStats) -> _Sample:
        """The counters of ``stats`` as a sample, not kept: a reader (a console's poll) does
        not add to the history, however many read it."""
        d = stats.dispatcher.counts
        return _Sample(
            at=time.monotonic(),
            calls_ok=d.calls_ok,
            lookups=stats.lookups,
            l1_hits=stats.l1_hits,
            l2_hits=stats.cache.l2_hits,
            stale=stats.stale_served,
            waits=sum(d.wait_counts),
            wait_sum_s=d.wait_sum_s,
            quota=self._gw.pool.total_rate(),
            by_credential={c.credential: c.calls for c in stats.pool.credentials},
            by_egress={e.egress: e.calls for e in stats.pool.egresses},
            by_scope={(x.kind, x.name): x.calls for x in stats.pool.scopes},
        )

    def before(self, current: _Sample, seconds: float) -> _Sample:
        """The newest kept sample at least ``seconds`` before ``current`` (else the oldest;
        ``current`` itself when none is kept yet): where rates over the last seconds start."""
        return next(
            (s for s in reversed(self._samples) if current.at - s.at >= seconds),
            self._samples[0] if self._samples else current,
        )

    def history(self) -> History:
        """Calls/s, the quota and the hit ratio over the last minutes, in steps."""
        out: History = {
            "t": [],
            "calls_per_s": [],
            "quota_per_s": [],
            "hit_ratio": [],
        }
        samples = list(self._samples)
        if len(samples) < 2:
            return out
        now = samples[-1].at
        step = [samples[0]]
        for s in samples[1:]:
            if s.at - step[-1].at >= HISTORY_STEP_S or s is samples[-1]:
                step.append(s)
        for a, b in itertools.pairwise(step):
            dt = b.at - a.at
            if dt <= 0:
                continue
            lookups = b.lookups - a.lookups
            hits = (b.l1_hits - a.l1_hits) + (b.l2_hits - a.l2_hits)
            out["t"].append(round(b.at - now, 1))
            out["calls_per_s"].append(round((b.calls_ok - a.calls_ok) / dt, 2))
            out["quota_per_s"].append(round(b.quota, 2))
            out["hit_ratio"].append(round(hits / lookups, 4) if lookups else None)
        return out


def _per_s(first: _Sample, last: _Sample, before: int, after: int) -> float:
    dt = last.at - first.at
    return round((after - before) / dt, 3) if dt > 0 else 0.0


def _use(per_s: float, rate: float | None) -> dict[str, float | None]:
    """Calls/s and their share of ``rate`` as its row shows it (``None``: no rate to use)."""
    shown = None if rate is None else round(rate, 3)
    return {"calls_per_s": per_s, "use": round(per_s / shown, 4) if shown else None}


class ConsoleRoutes:
    """``/console`` (the page and its files) and the admin state and lookup routes."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sampler = Sampler(ctx.gw)
        self._files = files("taogate.http").joinpath("console")

    async def page(self, request: Request) -> Response:
        html = self._files.joinpath("console.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _ASSETS.get(name)
        if media is None:
            raise Problem("not-found", f"no console file {name!r}")
        body = self._files.joinpath(name).read_bytes()
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return Response(body, media_type=media, headers=headers)

    async def state(self, request: Request) -> Response:
        """``GET /v1/admin/state``: everything the console shows, for scripts too."""
        self.ctx.client(request, admin=True)
        return Response(orjson.dumps(self.build_state()), media_type="application/json")

    def build_state(self) -> State:
        gw = self.ctx.gw
        stats = gw.stats()
        last = self.sampler.read(stats)
        first = self.sampler.before(last, RATE_WINDOW_S)
        d = stats.dispatcher
        credentials: list[Any] = []  # the pool's rows and their rates
        for c in stats.pool.credentials:
            key, row = c.credential, c.as_row()
            per_s = _per_s(first, last, first.by_credential.get(key, 0), last.by_credential[key])
            credentials.append(row | _use(per_s, c.rate))
        egresses = []
        for e in stats.pool.egresses:
            name, row = e.egress, e.as_row()
            per_s = _per_s(first, last, first.by_egress.get(name, 0), last.by_egress[name])
            egresses.append(row | _use(per_s, e.rate))
        scopes: list[Any] = []
        for x in stats.pool.scopes:
            at = (x.kind, x.name)
            per_s = _per_s(first, last, first.by_scope.get(at, 0), last.by_scope[at])
            scopes.append(x.as_row() | _use(per_s, x.rate))
        lookups = last.lookups - first.lookups
        l1 = last.l1_hits - first.l1_hits
        l2 = last.l2_hits - first.l2_hits
        stale = last.stale - first.stale
        waits = last.waits - first.waits
        redis = stats.replicas
        queued = d.queued
        calls_per_s = _per_s(first, last, first.calls_ok, last.calls_ok)
        quota = gw.pool.total_rate()
        return {
            "now": time.time(),
            "replica": {
                "mode": "single" if redis is None else redis.mode,
                "live_replicas": None if redis is None else redis.live_replicas,
                "id": None if redis is None else redis.replica,
            },
            "breaker": str(stats.breaker.state),
            "degraded": stats.degrade.status.to_dict(),
            "code7": d.counts.rate_limited,
            "code11": d.counts.ip_refused,
            "quota": {
                "calls_per_s": calls_per_s,
                "rate": round(quota, 3),
                "use": round(calls_per_s / quota, 4) if quota else None,
            },
            "credentials": credentials,
            "egresses": egresses,
            "scopes": scopes,
            "queue": {
                "interactive": queued["interactive"],
                "refresh": queued["refresh"],
                "bulk": queued["bulk"],
                "in_flight": d.in_flight,
                "wait_ms": round(1000 * (last.wait_sum_s - first.wait_sum_s) / waits, 2)
                if waits
                else None,
            },
            "cache": {
                "lookups_per_s": _per_s(first, last, first.lookups, last.lookups),
                "l1_hit_ratio": round(l1 / lookups, 4) if lookups else None,
                "l2_hit_ratio": round(l2 / lookups, 4) if lookups else None,
                "stale_ratio": round(stale / lookups, 4) if lookups else None,
                "l1_entries": stats.cache.l1_entries,
                "l1_bytes": stats.cache.l1_bytes,
            },
            "window_s": round(last.at - first.at, 2),
            "history": self.sampler.history(),
            # what a leak would grow: tasks on this worker's event loop (the soak watches it)
            "process": {"asyncio_tasks": len(asyncio.all_tasks())},
        }

    async def lookup(self, request: Request) -> Response:
        """``GET /v1/admin/items/{num_iid}``: an answer, with where it came from and who fetched
        it (the masked credential and the egress, when this replica fetched it lately)."""
        self.ctx.client(request, admin=True)
        num_iid: str = request.path_params["num_iid"]
        gw = self.ctx.gw
        try:
            lookup = await gw.get_one(num_iid)
        except InvalidRequest as exc:
            raise problem_for_error(exc, num_iid) from None
        answer_or_problem(lookup, num_iid, redact=gw.redact)
        fetched = gw.dispatcher.fetched_by(num_iid)
        body = lookup.to_dict() | {
            "num_iid": num_iid,
            "fetched_by": None
            if fetched is None
            else {"credential": fetched[0], "egress": fetched[1]},
        }
        return Response(orjson.dumps(body), media_type="application/json")
