"""Test doubles shipped with taogate: a TOP-compatible upstream simulator and its catalog, a
fake provider, a fake clock and a redis-server of the caller's own.

``async with Simulator([SimKey(app_key=..., secret=...)], port=0) as sim`` serves ``sim.url``
(TOP ``/router/rest``), ``sim.reseller_url`` and the ``/_sim/*`` control routes, so the demo,
the tests and the benchmarks run without real keys.
"""

from __future__ import annotations

from taogate.testing._catalog import Catalog, ItemInfo, ItemKind, ItemState
from taogate.testing._clock import FakeClock
from taogate.testing._fakes import FakeCall, FakeProvider, items_only, make_item
from taogate.testing._redis import RedisServer
from taogate.testing._sim import Simulator, serve_forever
from taogate.testing._sim_keys import SimAccount, SimKey

__all__ = [
    "Catalog",
    "FakeCall",
    "FakeClock",
    "FakeProvider",
    "ItemInfo",
    "ItemKind",
    "ItemState",
    "RedisServer",
    "SimAccount",
    "SimKey",
    "Simulator",
    "items_only",
    "make_item",
    "serve_forever",
]
