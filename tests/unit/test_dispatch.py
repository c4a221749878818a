"""The dispatcher and gateway over the fake provider: singleflight, batching, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from taogate import (
    CredentialInvalid,
    DeadlineExceeded,
    InvalidItemId,
    ItemUnreadable,
    NoCredentialAvailable,
    Overloaded,
    ProtocolMismatch,
    RateLimited,
    Settings,
    UpstreamBadRequest,
    UpstreamTransient,
    UpstreamUnavailable,
)
from taogate._breaker import BreakerPolicy
from taogate._dispatch import Priority
from taogate._gateway import Gateway
from taogate._model import Source
from taogate.testing import FakeClock
from taogate.testing._fakes import FakeProvider

IDS = [f"5200000{i:05d}" for i in range(400)]


def settings(qps: float = 1000.0, keys: int = 2, **limits: Any) -> Settings:
    return Settings(
        credentials=[
            {"app_key": f"1000000{k}", "secret": f"secret-{k}", "qps": qps} for k in range(keys)
        ],
        limits={"safety_factor": 1.0, "batch_window_ms": 5.0, **limits},
        cache={"max_age_s": 60.0, "max_stale_s": 600.0},
    )


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
async def make() -> AsyncIterator[GatewayFactory]:
    opened: list[Gateway] = []

    def factory(provider: FakeProvider, s: Settings | None = None, **kw: Any) -> Gateway:
        gw = Gateway(s or settings(), provider=provider, **kw)
        opened.append(gw)
        return gw

    yield factory
    for gw in opened:
        await gw.aclose()


async def test_concurrent_lookups_of_one_cold_id_make_one_upstream_id(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        results = await asyncio.gather(*(gw.get(IDS[0]) for _ in range(50)))
    assert provider.ids_fetched == [IDS[0]]
    assert all(r.item is not None and r.item.num_iid == IDS[0] for r in results)


async def test_duplicates_inside_and_across_requests(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        a, b = await asyncio.gather(
            gw.get_many([IDS[1], IDS[1], IDS[2], IDS[1]]), gw.get_many([IDS[2], IDS[1]])
        )
    assert list(a) == [IDS[1], IDS[2]]
    assert sorted(provider.ids_fetched) == [IDS[1], IDS[2]]
    assert a[IDS[2]].item == b[IDS[2]].item


async def test_second_lookup_is_an_l1_hit(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        first = await gw.get(IDS[0])
        second = await gw.get(IDS[0])
    assert first.source is Source.UPSTREAM
    assert second.source is Source.L1
    assert len(provider.calls) == 1


async def test_not_found_is_an_answer_and_is_cached(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        lookup = await gw.get("999999999999")
        again = await gw.get("999999999999")
    assert lookup.item is None
    assert lookup.error is None
    assert again.source is Source.L1
    assert len(provider.calls) == 1


async def test_invalid_id_is_refused_before_anything_is_sent(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        with pytest.raises(InvalidItemId):
            await gw.get_many([IDS[0], "1,2"])
    assert provider.calls == []


async def test_misses_are_packed_into_full_batches(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        results = await gw.get_many(IDS[:200])
    assert all(r.item is not None for r in results.values())
    assert [len(c.ids) for c in provider.calls] == [40] * 5


async def test_cancelled_waiter_does_not_cancel_the_flight(make: GatewayFactory) -> None:
    gate = asyncio.Event()
    provider = FakeProvider.with_ids(IDS, gate=gate)
    async with make(provider) as gw:
        first = asyncio.create_task(gw.get(IDS[0]))
        second = asyncio.create_task(gw.get(IDS[0]))
        await provider.entered.wait()  # the call is out
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        lookup = await second
    assert lookup.item is not None
    assert len(provider.calls) == 1


async def test_an_error_reaches_every_waiter(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(ProtocolMismatch("Invalid Timestamp", code=31))
    async with make(provider) as gw:
        results = await asyncio.gather(
            gw.get_many([IDS[0]], allow_stale=False), gw.get_many([IDS[0]], allow_stale=False)
        )
    errors = [r[IDS[0]].error for r in results]
    assert all(isinstance(e, ProtocolMismatch) for e in errors)
    assert errors[0] is errors[1]


async def test_bad_id_is_isolated_by_bisection(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS, bad_ids={IDS[17]})
    async with make(provider) as gw:
        results = await gw.get_many(IDS[:40])
    bad = results[IDS[17]].error
    assert isinstance(bad, UpstreamBadRequest)
    assert bad.ids == (IDS[17],)
    assert IDS[17] in str(bad)
    assert all(r.item is not None for i, r in results.items() if i != IDS[17])
    assert len(provider.calls) <= 1 + 2 * 6  # bounded: two halves per level, log2(40) levels


async def test_rate_limit_requeues_on_another_credential(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(RateLimited("App Call Limited", retry_after=30.0, code=7))
    async with make(provider) as gw:
        lookup = await gw.get(IDS[0])
        snapshot = gw.snapshot()
    assert lookup.item is not None
    assert len(provider.calls) == 2
    assert provider.calls[0].app_key != provider.calls[1].app_key
    banned = [c for c in snapshot["credentials"] if c["status"] == "banned"]
    assert len(banned) == 1
    assert snapshot["dispatcher"]["rate_limited"] == 1


async def test_invalid_credential_is_quarantined_and_others_carry(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(CredentialInvalid("Invalid signature", code=25))
    async with make(provider) as gw:
        results = await gw.get_many(IDS[:80])
        later = await gw.get_many(IDS[80:200])
        snapshot = gw.snapshot()
    assert all(r.item is not None for r in [*results.values(), *later.values()])
    bad_key = provider.calls[0].app_key
    assert all(c.app_key != bad_key for c in provider.calls[1:])
    assert [c["status"] for c in snapshot["credentials"]].count("quarantined") == 1


async def test_no_usable_credential_fails_fast(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(CredentialInvalid("Invalid app Key", code=29))
    async with make(provider, settings(keys=1)) as gw:
        first = await gw.get_many([IDS[0]])
        second = await gw.get_many([IDS[1]])
    assert isinstance(first[IDS[0]].error, NoCredentialAvailable)
    assert isinstance(second[IDS[1]].error, NoCredentialAvailable)
    assert len(provider.calls) == 1


async def test_transient_fault_is_retried(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(UpstreamTransient("HTTP 503"))
    async with make(provider) as gw:
        lookup = await gw.get(IDS[0])
    assert lookup.item is not None
    assert len(provider.calls) == 2


async def test_persistent_fault_fails_after_bounded_attempts(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    provider.fail_next(*(UpstreamTransient("HTTP 503") for _ in range(10)))
    async with make(provider) as gw:
        result = await gw.get_many([IDS[0]])
    assert isinstance(result[IDS[0]].error, UpstreamTransient)
    assert len(provider.calls) == 3


async def test_stale_answer_when_the_upstream_fails(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        await gw.get(IDS[0])
        provider.fail_next(*(UpstreamTransient("HTTP 503") for _ in range(10)))
        fresh_enough = await gw.get(IDS[0], max_age_s=0.0)
        strict = await gw.get_many([IDS[0]], max_age_s=0.0, allow_stale=False)
    assert fresh_enough.stale
    assert fresh_enough.item is not None
    assert fresh_enough.age_s >= 0
    assert isinstance(strict[IDS[0]].error, UpstreamTransient)


async def test_open_breaker_fails_fast_or_serves_stale(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    policy = BreakerPolicy(window=4, min_calls=2, failure_ratio=0.5, open_s=60.0)
    async with make(provider, breaker_policy=policy) as gw:
        await gw.get(IDS[0])
        provider.fail_next(*(UpstreamTransient("HTTP 503") for _ in range(10)))
        await gw.get_many([IDS[1]], allow_stale=False)
        assert gw.breaker.state == "open"
        calls = len(provider.calls)
        cold = await gw.get_many([IDS[2]])
        cached = await gw.get(IDS[0], max_age_s=0.0)
    error = cold[IDS[2]].error
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after is not None
    assert cached.stale
    assert len(provider.calls) == calls  # nothing more was sent


async def test_overload_is_answered_at_once(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider, settings(qps=2.0, keys=1)) as gw:
        # 2 calls/s of 40 ids: 400 ids need ~5 s; a 1.5 s deadline admits the first batches only.
        # The decision is made when the ids are submitted: the refused flights are already done.
        flights = gw.dispatcher.submit(
            IDS, priority=Priority.INTERACTIVE, deadline=asyncio.get_running_loop().time() + 1.5
        )
        refused = {i: f for i, f in flights.items() if f.done()}
        admitted = [i for i, f in flights.items() if not f.done()]
    assert 40 <= len(admitted) <= 120
    assert admitted == IDS[: len(admitted)]  # the head of the queue is admitted, in order
    errors = [f.exception() for f in refused.values()]
    assert all(isinstance(e, Overloaded) for e in errors)
    assert all(
        e.retry_after is not None and e.retry_after > 0 for e in errors if isinstance(e, Overloaded)
    )


async def test_deadline_exceeded_when_the_answer_is_late(make: GatewayFactory) -> None:
    gate = asyncio.Event()
    provider = FakeProvider.with_ids(IDS, gate=gate)
    async with make(provider) as gw:
        result = await gw.get_many([IDS[0]], deadline_s=0.5)  # admitted: the RTT guess is 0.35
        gate.set()
    assert isinstance(result[IDS[0]].error, DeadlineExceeded)


async def test_interactive_goes_before_bulk(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider, settings(qps=5.0, keys=1)) as gw:
        await gw.get(IDS[0])  # the next slot is 0.2 s away
        bulk = asyncio.create_task(gw.get_many(IDS[100:180], priority=Priority.BULK, deadline_s=30))
        await asyncio.sleep(0)  # the bulk ids are queued first
        interactive = asyncio.create_task(gw.get_many(IDS[200:210]))
        await asyncio.gather(bulk, interactive)
        stats = gw.dispatcher.stats
        load = gw.dispatcher.interactive_load(window_s=10.0)
    second = provider.calls[1].ids
    assert second[:10] == tuple(IDS[200:210])  # the interactive ids lead the next batch
    assert len(second) == 40  # and bulk fills the rest of it
    # ids count by their own priority, calls by the most urgent id they carried
    assert stats.ids_by_priority == {"interactive": 11, "bulk": 80}
    assert stats.calls_by_priority == {"interactive": 2, "bulk": 2}  # 1, 10+30, 40, 10
    # what interactive took from the quota: its 11 ids, in calls' worth, over 10 s
    assert load == pytest.approx(11 / 40 / 10.0)


async def test_refresh_ahead_renews_hot_entries(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    s = settings()
    s = s.model_copy(
        update={"cache": s.cache.model_copy(update={"max_age_s": 100.0, "ttl_jitter": 0.0})}
    )
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, s, clock=clock) as gw:
        await gw.get(IDS[0])
        clock.advance(70.0)  # fresh, not yet in the last 20 %
        await gw.get(IDS[0])
        assert gw.refreshes == 0
        clock.advance(15.0)  # 85 s of 100: refresh ahead
        hit = await gw.get(IDS[0])
        await gw.dispatcher.wait_idle()
        entry = gw.cache.l1.peek(IDS[0])
    assert hit.source is Source.L1
    assert gw.refreshes == 1
    assert provider.ids_fetched == [IDS[0], IDS[0]]
    assert entry is not None
    assert entry.age(clock()) < 1.0  # the refreshed answer replaced the old one


async def test_entries_expire_by_max_age(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, clock=clock) as gw:
        await gw.get(IDS[0])
        clock.advance(30.0)
        assert (await gw.get(IDS[0])).source is Source.L1
        assert (await gw.get(IDS[0], max_age_s=10.0)).source is Source.UPSTREAM
        clock.advance(61.0)  # past the default 60 s
        assert (await gw.get(IDS[0])).source is Source.UPSTREAM
    assert len(provider.calls) == 3


async def test_invalidate_forgets(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    async with make(provider) as gw:
        await gw.get(IDS[0])
        assert await gw.invalidate([IDS[0], IDS[1]]) == 1
        again = await gw.get(IDS[0])
    assert again.source is Source.UPSTREAM


async def test_closing_fails_waiting_lookups(make: GatewayFactory) -> None:
    gate = asyncio.Event()
    provider = FakeProvider.with_ids(IDS, gate=gate)
    gw = make(provider)
    await gw.start()
    task = asyncio.create_task(gw.get_many([IDS[0]], allow_stale=False, deadline_s=10))
    await provider.entered.wait()
    await gw.aclose()
    result = await task
    assert isinstance(result[IDS[0]].error, UpstreamUnavailable)


async def test_half_open_with_its_probe_out_fails_fast(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    policy = BreakerPolicy(window=4, min_calls=2, failure_ratio=0.5, open_s=5.0, half_open_probes=1)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, breaker_policy=policy, clock=clock) as gw:
        provider.fail_next(*(UpstreamTransient("HTTP 503") for _ in range(2)))
        await gw.get_many([IDS[1]], allow_stale=False)  # two failed attempts open it
        assert gw.breaker.state == "open"
        clock.advance(5.0)
        gate = asyncio.Event()
        provider.gate = gate
        provider.entered.clear()
        probe = asyncio.create_task(gw.get(IDS[2]))
        await provider.entered.wait()  # the probe is out
        assert not gw.breaker.permits()
        started = asyncio.get_running_loop().time()
        refused = await gw.get_many([IDS[3]], allow_stale=False)
        waited = asyncio.get_running_loop().time() - started
        gate.set()
        answered = await probe
    assert isinstance(refused[IDS[3]].error, UpstreamUnavailable)
    assert waited < 0.05  # answered at once, not queued behind the probe
    assert answered.item is not None
    assert gw.breaker.state == "closed"


async def test_a_cache_that_fails_to_write_does_not_lose_the_answer() -> None:
    from taogate._breaker import CircuitBreaker, RetryBudget
    from taogate._dispatch import Dispatcher
    from taogate.quota.pool import CredentialPool

    def broken_sink(ids: object, items: object) -> None:
        raise RuntimeError("cache down")

    loop = asyncio.get_running_loop()
    provider = FakeProvider.with_ids(IDS)
    pool = CredentialPool(settings().build_credentials(), clock=loop.time)
    dispatcher = Dispatcher(
        provider,
        pool,
        breaker=CircuitBreaker(clock=loop.time),
        retry_budget=RetryBudget(clock=loop.time),
        clock=loop.time,
        on_result=broken_sink,
    )
    dispatcher.start()
    try:
        flights = dispatcher.submit(
            [IDS[0]], priority=Priority.INTERACTIVE, deadline=loop.time() + 5
        )
        item = await flights[IDS[0]]
        assert item is not None
        await dispatcher.wait_idle()  # nothing left hanging
        again = dispatcher.submit([IDS[0]], priority=Priority.INTERACTIVE, deadline=loop.time() + 5)
        assert await again[IDS[0]] is not None
    finally:
        await dispatcher.aclose()
    assert len(provider.calls) == 2


async def test_a_refusal_of_the_whole_request_stops_bisecting(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS, bad_ids=set(IDS[:40]))  # every id refused
    async with make(provider) as gw:
        results = await gw.get_many(IDS[:40])
    assert all(isinstance(r.error, UpstreamBadRequest) for r in results.values())
    assert len(provider.calls) <= 1 + 24  # not 79: one call per id and every split


async def test_allow_stale_false_never_serves_stale(make: GatewayFactory) -> None:
    provider = FakeProvider.with_ids(IDS)
    s = settings()
    s = s.model_copy(
        update={"cache": s.cache.model_copy(update={"max_age_s": 100.0, "ttl_jitter": 0.5})}
    )
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, s, clock=clock) as gw:
        await gw.get(IDS[0])
        entry = gw.cache.l1.peek(IDS[0])
        assert entry is not None
        clock.advance(entry.fresh_until - entry.fetched_at + 0.1)  # past its jittered freshness
        provider.fail_next(*(UpstreamTransient("HTTP 503") for _ in range(5)))
        strict = await gw.get_many([IDS[0]], allow_stale=False)
    assert strict[IDS[0]].error is not None
    assert not strict[IDS[0]].stale


async def test_a_lease_that_cannot_leave_in_time_is_given_back(make: GatewayFactory) -> None:
    """A stall between grant and send would crowd the platform's window: ask again instead."""
    provider = FakeProvider.with_ids(IDS)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, settings(qps=5.0, keys=1), clock=clock) as gw:
        acquire = gw.pool.acquire
        stalls = [0.2]  # the loop stalls once, right after a grant (slack here: 50 ms)

        async def stalling_acquire(**kw: Any) -> Any:
            lease = await acquire(**kw)
            if stalls:
                clock.advance(stalls.pop())
            return lease

        gw.pool.acquire = stalling_acquire  # type: ignore[method-assign]
        result = await gw.get(IDS[0])
        stats = gw.dispatcher.stats
    assert result.item is not None
    assert stats.late_leases == 1
    assert len(provider.calls) == 1  # the late lease sent nothing; a fresh one carried the id


async def test_an_unreadable_item_fails_its_id_alone_and_is_not_cached(
    make: GatewayFactory,
) -> None:
    ids = IDS[:40]
    provider = FakeProvider.with_ids(ids, unreadable={ids[7]})
    async with make(provider) as gw:
        first = await gw.get_many(ids)
        assert len(provider.calls) == 1  # one call, not retried
        error = first[ids[7]].error
        assert isinstance(error, ItemUnreadable)
        assert error.num_iid == ids[7]
        assert all(first[i].found for i in ids if i != ids[7])
        assert gw.dispatcher.stats.items_unreadable == 1
        assert gw.breaker.state.value == "closed"
        # never cached (not as "not found" either): the next lookup asks again
        assert gw.cache.l1.peek(ids[7]) is None
        provider.unreadable.clear()
        second = await gw.get(ids[7])
    assert second.found
    assert provider.ids_fetched.count(ids[7]) == 2


async def test_an_unreadable_item_serves_a_stale_answer_when_there_is_one(
    make: GatewayFactory,
) -> None:
    provider = FakeProvider.with_ids(IDS[:2])
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, clock=clock) as gw:
        await gw.get(IDS[0])
        clock.advance(61.0)  # past max_age, within max_stale
        provider.unreadable.add(IDS[0])
        lookup = await gw.get(IDS[0])
    assert lookup.stale
    assert lookup.found


async def test_interactive_record_stays_bounded_without_readers(make: GatewayFactory) -> None:
    """The calls counted for ``interactive_load`` are forgotten as new ones come, not only
    when a job submission reads the load: hours of lookups keep one window's worth."""
    window = 60.0  # taogate._dispatch.INTERACTIVE_LOAD_WINDOW_S
    provider = FakeProvider.with_ids(IDS)
    clock = FakeClock(base=asyncio.get_running_loop().time)
    async with make(provider, clock=clock) as gw:
        sizes = []
        for num_iid in IDS[:300]:
            await gw.get(num_iid)  # one call each, one second apart; nobody reads the load
            clock.advance(1.0)
            sizes.append(len(gw.dispatcher._sender._interactive_ids))
        assert len(provider.calls) == 300
        assert max(sizes) <= window + 1
        # the window still counts what it should: the last 10 s hold 9 calls of one id (the
        # tenth started a moment more than 10 s ago)
        assert gw.dispatcher.interactive_load(window_s=10.0) == pytest.approx(9 / 40 / 10.0)
        with pytest.raises(ValueError, match="window_s"):
            gw.dispatcher.interactive_load(window_s=window + 1)
