"""The TOP-compatible upstream simulator: an aiohttp server answering as the platform would.

Routes: ``/router/rest`` (TOP, GET or POST form), ``/taobao/item_get/`` (an onebound-style
reseller) and the control routes ``/_sim/{truth,stats,faults,reset,catalog}``. Every answer is
decided at arrival (checks, rate limits, prices) and sent after the simulated latency.

The order of checks of a TOP call, the first that fails answering:

1. the call itself: ``method`` (21/22), ``app_key`` (28/29, a revoked key too), ``v`` (32/34),
   ``format`` (23), ``timestamp`` (30/31), the signature (24/25) — nothing is counted against
   a limit before the caller is known;
2. the key's IP whitelist (11 ``isv.permission-ip-whitelist-limit``): a permission of the app,
   checked before any flow control;
3. the method over every key, its ban then its cap (7 ``limited-by-api-access-count``, the
   method banned for ``method_ban_s`` for all keys): the platform protects an API before it
   looks at who calls it;
4. the account over all its keys (15 / sub_code ``9100``, no ban);
5. the key: its ban (after its window, or until midnight once its day is spent), then its window
   of ``qps`` (7 ``limited-by-app-access-count``, banned for ``ban_s``);
6. the key × method cap (7 ``limited-by-app-api-access-count``, that pair banned ``pair_ban_s``);
7. the key's daily quota (7 ``limited-by-app-access-count`` until 00:00 Beijing time);
8. the business parameters (40/41), old-format ids (15 ``-4003``), then injected faults.

A call a limit refuses enters no window: only a call that every limit (steps 3-7) lets through
counts in the method's, the account's, the key's and the pair's windows and in the key's day (a
call refused after them, at step 8, has counted). The peaks in the stats count the calls that
reached a check: a key's, a method's and the totals' ``max_calls_in_1s`` from step 3, an
account's from step 4. The reseller route checks the key, its whitelist, its ban and window and its
daily quota; accounts and method caps are the platform's.

Reseller ``error_code`` values are the simulator's conventions (the real reseller's codes are
partly unconfirmed): "0000" ok; "4005" key or secret invalid (or the key revoked); "4003" the
calling address is not in the key's whitelist; "4013" rate limited, banned or the day's quota
spent; "4000" ``num_iid`` missing; "2000" item not found (absent, unknown or an
old-format id); "5000" remote service error (the ``code15`` fault). A "2000" for an absent item
is a served call: it counts as ``ok`` (and costs), as a TOP answer that omits the id does.

The parts: ``_sim_state`` decides each answer, with the keys', accounts' and methods' state and
counters of ``_sim_keys`` (their windows and daily quotas in ``_sim_limits``) and the faults of
``_sim_faults``; ``_sim_answers`` renders it; this module
serves it, with the control routes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from taogate._errors import ConfigurationError
from taogate._masking import mask_id
from taogate._settings import Settings, SimKeySettings, SimSettings
from taogate.testing._catalog import Catalog, yuan
from taogate.testing._sim_answers import Answers, bad_request, json_response
from taogate.testing._sim_faults import Fault
from taogate.testing._sim_keys import SimAccount, SimKey, check_method_caps
from taogate.testing._sim_state import ResellerCall, SimState, TopCall, TopError

__all__ = ["Simulator", "serve_forever", "sim_keys"]

_MAX_TRUTH_IDS: Final = 10_000
_MAX_CATALOG_PAGE: Final = 100_000
_LOOPBACK: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


class Simulator:
    """The simulated upstream: ``async with Simulator(keys, settings=...) as sim``.

    ``accounts`` are the accounts keys may name; ``method_qps`` (method → calls per second over
    every key) replaces ``settings.method_qps``. ``clock`` (monotonic) drives windows, bans,
    faults and prices; ``wall_clock`` checks the ``timestamp`` parameter, counts the daily quotas
    by Beijing day and dates the truth endpoint; ``seed`` fixes latency and faults. A key that
    names an unknown account, or an unknown method in a cap, is a ``ValueError``.
    """

    def __init__(
        self,
        keys: Iterable[SimKey],
        *,
        accounts: Iterable[SimAccount] = (),
        method_qps: Mapping[str, float] | None = None,
        settings: SimSettings | None = None,
        host: str | None = None,
        port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        seed: int | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        keys = list(keys)
        names = [k.app_key for k in keys]
        if len(set(names)) != len(names):
            raise ValueError("an app_key is listed twice")
        self.settings = cfg = settings or SimSettings()
        self.host = cfg.host if host is None else host
        self._port = cfg.port if port is None else port
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = random.Random(cfg.seed if seed is None else seed)
        self.catalog = catalog or Catalog(
            cfg.catalog_size,
            cfg.seed,
            absent_ratio=cfg.absent_ratio,
            coupon_ratio=cfg.coupon_ratio,
            legacy_ratio=cfg.legacy_ratio,
            price_changes_per_hour=cfg.price_changes_per_hour,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.state = SimState(
            keys,
            accounts=accounts,
            method_qps=check_method_caps(cfg.method_qps if method_qps is None else method_qps),
            ban_s=cfg.ban_s,
            method_ban_s=cfg.method_ban_s,
            pair_ban_s=cfg.pair_ban_s,
            max_skew_s=cfg.max_skew_s,
            cost_per_call=cfg.cost_per_call,
            is_legacy=self.catalog.is_legacy,
            rng=self._rng,
            now=clock(),
        )
        self._latency_s = (cfg.latency_ms[0] / 1000.0, cfg.latency_ms[1] / 1000.0)
        self._answers = Answers(self.catalog, rng=self._rng, wall_clock=wall_clock)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, host: str | None = None, port: int | None = None
    ) -> Simulator:
        """A simulator for ``settings.credentials`` with ``settings.sim`` (see :func:`sim_keys`)
        and the ``[[accounts]]`` the credentials name, each at its ``qps``.

        ``ConfigurationError`` for no credentials or a cap on a method the simulator does not
        serve.
        """
        keys = sim_keys(settings)
        if not keys:
            raise ConfigurationError(
                "no credentials: the simulator needs at least one app key to accept",
                field="credentials",
            )
        try:
            check_method_caps(settings.sim.method_qps)
        except ValueError as exc:
            raise ConfigurationError(f"sim.{exc}", field="sim.method_qps") from None
        accounts = [SimAccount(name=a.name, qps=a.qps) for a in settings.build_accounts()]
        return cls(keys, settings=settings.sim, host=host, port=port, accounts=accounts)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; ``port`` then tells which)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Serve until cancelled (``taogate sim``); starts and stops the server if needed."""
        if self._runner is not None:
            await asyncio.Future()
        async with self:
            await asyncio.Future()

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the simulator is not running")
        return self._bound_port

    @property
    def base_url(self) -> str:
        host = _LOOPBACK.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/router/rest"

    @property
    def reseller_url(self) -> str:
        return f"{self.base_url}/taobao/item_get/"

    # --- control --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sim/stats`` document."""
        return self.state.stats.render(self._clock(), self._wall_clock())

    def set_fault(self, kind: str, duration_s: float, **kw: Any) -> dict[str, Any]:
        """Start (or, with ``duration_s=0``, end) a fault as ``POST /_sim/faults`` does.

        ``ValueError`` if the description is not valid.
        """
        now = self._clock()
        return self.state.add_fault({"kind": kind, "duration_s": duration_s, **kw}, now).render(now)

    def set_secret(self, app_key: str, secret: str, *, keep_old_s: float = 0.0) -> None:
        """Rotate ``app_key``'s secret as the platform does when a secret is reset.

        From now on calls must be signed with ``secret``; the old secret is refused at once
        (code 25; reseller 4005), or still accepted for ``keep_old_s`` seconds — a platform
        that lets both secrets work during a rotation. ``ValueError`` for an unknown key.
        """
        self.state.set_secret(app_key, secret, self._clock(), keep_old_s)

    def faults(self) -> list[dict[str, Any]]:
        """The active faults, as ``GET /_sim/faults`` lists them."""
        now = self._clock()
        return [f.render(now) for f in self.state.faults.active(now)]

    def truth(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Each id's prices now (``None`` if absent): the ``items`` of ``GET /_sim/truth``."""
        now = self._clock()
        items: dict[str, dict[str, Any] | None] = {}
        for num_iid in ids:
            state = self.catalog.current(num_iid, now)
            if state is None:
                items[num_iid] = None
                continue
            items[num_iid] = row = {
                "zk_final_price": yuan(state.zk_fen),
                "reserve_price": yuan(state.reserve_fen),
                "final_price": yuan(state.final_fen),
                "final_price_basis": state.final_price_basis,
                "last_changed": state.last_changed_wall,
                "changes": state.changes,
            }
            if state.coupon_amount is not None:
                row["coupon_amount"] = str(state.coupon_amount)
                row["coupon_start_fee"] = str(state.coupon_start_fee)
        return items

    def reset(self) -> None:
        """Clear stats, windows, bans, faults and price changes (the catalog starts again)."""
        self.catalog.restart()
        self.state.reset(self._clock())
        self._answers.reset()

    # --- the upstream ---------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/router/rest", self._handle_top)
        app.router.add_route("POST", "/router/rest", self._handle_top)
        app.router.add_get("/taobao/item_get/", self._handle_reseller)
        app.router.add_get("/taobao/item_get", self._handle_reseller)
        app.router.add_get("/_sim/truth", self._handle_truth)
        app.router.add_get("/_sim/stats", self._handle_stats)
        app.router.add_get("/_sim/faults", self._handle_faults)
        app.router.add_post("/_sim/faults", self._handle_faults)
        app.router.add_delete("/_sim/faults", self._handle_faults)
        app.router.add_post("/_sim/reset", self._handle_reset)
        app.router.add_post("/_sim/secret", self._handle_secret)
        app.router.add_get("/_sim/catalog", self._handle_catalog)
        return app

    def _delay_s(self, now: float) -> float:
        low, high = self._latency_s
        extra = self.state.faults.extra_latency_s(now)
        return (self._rng.uniform(low, high) if high > 0 else 0.0) + extra

    async def _handle_top(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote
        self.state.stats.seen_from(remote or "?", self._clock())
        params = dict(request.query)
        if request.method == "POST" and request.body_exists:
            for name, value in (await request.post()).items():
                if isinstance(value, str):
                    params[name] = value  # the body wins over the query string
        response, delay = self.answer_top(params, remote)
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def answer_top(
        self, params: Mapping[str, str], remote: str | None = None
    ) -> tuple[web.Response, float]:
        """The answer to a ``/router/rest`` call from ``remote`` (the source address; ``None``:
        unknown, refused by any whitelist) and the seconds to wait before sending it.

        The upstream without the network: the HTTP route sleeps the delay, tests read the clock.
        """
        now = self._clock()
        outcome = self.state.decide_top(params, now, self._wall_clock(), remote)
        if isinstance(outcome, TopCall):
            doc, returned = self._answers.top(outcome, now)
            self.state.record_top_ok(outcome, returned)
            response = json_response(doc)
        elif isinstance(outcome, TopError):
            response = json_response(self._answers.top_error(outcome))
        else:
            response = self._answers.fault(outcome)
        return response, self._delay_s(now)

    async def _handle_reseller(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote
        self.state.stats.seen_from(remote or "?", self._clock())
        response, delay = self.answer_reseller(request.query, remote)
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def answer_reseller(
        self, query: Mapping[str, str], remote: str | None = None
    ) -> tuple[web.Response, float]:
        """The answer to a ``/taobao/item_get/`` call from ``remote`` and the seconds to wait
        before sending it."""
        now = self._clock()
        wall = self._wall_clock()
        outcome = self.state.decide_reseller(query, now, wall, remote)
        delay = self._delay_s(now)
        if isinstance(outcome, str):
            return self._answers.fault(outcome), delay
        if isinstance(outcome, ResellerCall):
            doc, found = self._answers.reseller(outcome, now, wall)
            self.state.record_ok(outcome.key, 1, 1 if found else 0)
        else:
            doc = self._answers.reseller_error(outcome)
        doc["request_id"] = f"gw-{self._answers.request_id()}"
        doc["execution_time"] = f"{delay:.3f}"
        return json_response(doc), delay

    # --- control routes -------------------------------------------------------------------

    async def _handle_truth(self, request: web.Request) -> web.StreamResponse:
        ids = [i.strip() for i in request.query.get("ids", "").split(",") if i.strip()]
        if len(ids) > _MAX_TRUTH_IDS:
            return bad_request(f"at most {_MAX_TRUTH_IDS} ids per call")
        return json_response({"items": self.truth(ids), "now": self._wall_clock()})

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.stats())

    async def _handle_faults(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            cleared = len(self.faults())
            self.state.faults.clear()
            return json_response({"cleared": cleared})
        if request.method == "POST":
            try:
                doc = orjson.loads(await request.read())
                fault: Fault = self.state.add_fault(doc, self._clock())
            except orjson.JSONDecodeError:
                return bad_request("the body must be JSON")
            except ValueError as exc:
                return bad_request(str(exc))
            return json_response({"fault": fault.render(self._clock())})
        return json_response({"faults": self.faults()})

    async def _handle_secret(self, request: web.Request) -> web.StreamResponse:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return bad_request("the body must be JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("secret"), str):
            return bad_request('the body must be {"app_key": …, "secret": …, "keep_old_s": 0}')
        keep = doc.get("keep_old_s", 0)
        if isinstance(keep, bool) or not isinstance(keep, int | float):
            return bad_request("keep_old_s must be a number of seconds")
        app_key = str(doc.get("app_key", ""))
        try:
            self.set_secret(app_key, doc["secret"], keep_old_s=float(keep))
        except ValueError as exc:
            return bad_request(str(exc))
        return json_response({"app_key": app_key, "keep_old_s": float(keep)})  # never the secret

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_response({"reset": True})

    async def _handle_catalog(self, request: web.Request) -> web.StreamResponse:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            return bad_request("offset and limit must be integers")
        if offset < 0 or not 0 <= limit <= _MAX_CATALOG_PAGE:
            return bad_request(f"offset >= 0 and 0 <= limit <= {_MAX_CATALOG_PAGE}")
        size = self.catalog.size
        ids = [self.catalog.id_at(i) for i in range(min(offset, size), min(offset + limit, size))]
        return json_response({"ids": ids, "size": size})


def sim_keys(settings: Settings) -> list[SimKey]:
    """The keys a simulator for ``settings`` accepts: each credential, at ``[sim] qps`` if set
    (else its own), with its ``[sim.keys."<app_key>"]`` whitelist, daily quota and method caps."""
    keys = []
    for cred in settings.build_credentials():
        qps = settings.sim.qps if settings.sim.qps is not None else cred.qps
        own = settings.sim.keys.get(cred.app_key) or SimKeySettings()
        try:
            key = SimKey(
                app_key=cred.app_key,
                secret=cred.secret,
                qps=qps,
                whitelist=own.whitelist,
                daily_quota=own.daily_quota,
                method_qps=own.method_qps,
                account=cred.account,
            )
        except ValueError as exc:
            where = f'sim.keys."{mask_id(cred.app_key)}"'
            raise ConfigurationError(f"{where}: {exc}", field="sim.keys") from None
        keys.append(key)
    return keys


async def serve_forever(sim: Simulator) -> None:
    """Run ``sim`` until cancelled (what ``taogate sim`` does)."""
    await sim.serve_forever()
