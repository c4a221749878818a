"""The library's parts built from :class:`Settings`, each handed what it needs when it is built.

:func:`build_parts` builds the provider, the circuit breaker, degraded mode, the credential
pool, the cache tiers and the secret-file watcher; with ``[redis] url`` set, also the Redis
client and what runs on it — the replicas (membership and mode), the shared limits, the L2
tier, the pub/sub listener and the shared degrade override. The Redis modules are imported
only then. Nothing is rewired after it is built: callbacks are handed in at construction
(a refused credential rechecks its secret file, an invalidation reaches L1) or subscribed to
(the pool and degraded mode follow the replicas and the shared override).

:class:`~taogate.Gateway` builds its parts here when it starts; :class:`~taogate.Service`
adds the bulk-job worker on top. :meth:`Parts.start` starts them in order — the replicas
(joining, or local mode if Redis is down), the pub/sub listener, the shared override (read
once), the secret files (checked once, then polled) — and :meth:`Parts.aclose` stops them in
reverse, then ends the cache's background writes, closes the Redis client, the pool's
background work and the provider (when built here).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taogate._breaker import BreakerPolicy, CircuitBreaker
from taogate._degrade import DegradeControl
from taogate._masking import Redactor
from taogate._secrets import SecretFiles
from taogate._settings import Settings
from taogate.cache.memory import MemoryCache
from taogate.cache.tiered import TieredCache
from taogate.providers import build_provider
from taogate.providers.base import Provider
from taogate.quota import CredentialPool, PoolPolicy

if TYPE_CHECKING:  # Redis is an integration: imported only where it is configured
    from taogate._redis import RedisClient
    from taogate.cache.redis import RedisTier
    from taogate.quota.redis import SharedLimits
    from taogate.replicas import PubSubListener, Replicas, SharedOverride

__all__ = ["Parts", "build_parts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """What a gateway is made of; the Redis-backed parts are ``None`` without Redis."""

    provider: Provider
    #: whether the provider was built here (then :meth:`aclose` closes it)
    owns_provider: bool
    breaker: CircuitBreaker
    degrade: DegradeControl
    pool: CredentialPool
    cache: TieredCache
    secret_files: SecretFiles | None = None
    #: the client every Redis-backed part shares (the job store too)
    redis: RedisClient | None = None
    replicas: Replicas | None = None
    listener: PubSubListener | None = None
    override: SharedOverride | None = None

    async def start(self) -> None:
        """Start the parts that run on their own, in order."""
        if self.replicas is not None:
            await self.replicas.start()
        if self.listener is not None:
            await self.listener.start()
        if self.override is not None:
            await self.override.start()
        if self.secret_files is not None:
            self.secret_files.check("start")  # the file may have changed since it was read
            self.secret_files.start()

    async def aclose(self) -> None:
        """Stop them in reverse and release what they hold."""
        if self.secret_files is not None:
            await self.secret_files.aclose()
        if self.override is not None:
            await self.override.aclose()
        await self.cache.aclose()
        if self.listener is not None:
            await self.listener.aclose()
        if self.replicas is not None:
            await self.replicas.aclose()
        if self.redis is not None:
            from taogate._redis import FAILURES, close

            with contextlib.suppress(*FAILURES):
                await close(self.redis)
        await self.pool.aclose()
        if self.owns_provider:
            await self.provider.aclose()


def build_parts(
    settings: Settings,
    *,
    clock: Callable[[], float],
    rng: random.Random,
    redact: Redactor,
    provider: Provider | None = None,
    breaker_policy: BreakerPolicy | None = None,
) -> Parts:
    """The parts for ``settings`` (built, not started). ``redact`` learns every rotated secret;
    ``provider`` defaults to the one ``[upstream]`` describes."""
    s = settings
    egresses = s.build_egresses()
    owns_provider = provider is None
    if provider is None:
        provider = build_provider(s.upstream, egresses)
    policy = PoolPolicy(safety_factor=s.limits.safety_factor)
    l1 = MemoryCache(
        max_entries=s.cache.l1_max_entries, max_bytes=s.cache.l1_max_bytes, clock=clock
    )
    redis: RedisClient | None = None
    replicas: Replicas | None = None
    listener: PubSubListener | None = None
    override: SharedOverride | None = None
    limits: SharedLimits | None = None
    l2: RedisTier | None = None
    if s.redis.url:
        from taogate._redis import connect
        from taogate.cache.redis import RedisTier
        from taogate.quota.redis import SharedLimits
        from taogate.replicas import PubSubListener, Replicas, SharedOverride

        redis = connect(s.redis)
        members = replicas = Replicas(redis, s.redis)
        limits = SharedLimits(
            redis,
            prefix=s.redis.prefix,
            policy=policy,
            probe_hold_s=max(10.0, 2 * s.upstream.timeout_s),
            on_malformed=members.note_malformed,
            share=lambda: members.shared_share,
        )
        l2 = RedisTier(
            redis,
            prefix=s.redis.prefix,
            max_fresh_s=max(s.cache.max_age_s, s.cache.negative_ttl_s),
            max_keep_s=s.cache.max_age_s + s.cache.max_stale_s,
            enabled=s.redis.l2,
            is_shared=lambda: members.sharing,
            on_failure=members.lost,
            on_malformed=members.note_malformed,
            on_invalidate=l1.invalidate,
            clock=clock,
        )
        override = SharedOverride(redis, members, poll_s=s.redis.heartbeat_s)
        listener = PubSubListener(
            redis, members, {l2.channel: l2.on_message, override.channel: override.on_message}
        )
    cache = TieredCache(
        l1,
        l2,
        max_age_s=s.cache.max_age_s,
        max_stale_s=s.cache.max_stale_s,
        negative_ttl_s=s.cache.negative_ttl_s,
        jitter=s.cache.ttl_jitter,
        clock=clock,
        rng=rng,
    )
    credentials = s.build_credentials()
    files = {c.app_key: c.secret_file for c in s.credentials if c.secret_file}
    watcher: SecretFiles | None = None

    def recheck(app_key: str) -> None:
        if watcher is not None:
            watcher.check_one(app_key, "credential refused")

    pool = CredentialPool(
        credentials,
        policy,
        clock=clock,
        egresses=egresses,
        accounts=s.build_accounts(),
        method=s.upstream.method if s.upstream.kind == "top" else "taobao/item_get",
        method_qps=s.upstream.method_qps,
        shared=limits,
        replicas=replicas,
        shared_timeout_s=s.redis.timeout_s,
        recheck_secret=recheck if files else None,
    )
    if files:

        def rotate(app_key: str, secret: str) -> None:
            redact.add(secret)
            pool.replace_secret(app_key, secret)

        watcher = SecretFiles(
            files,
            {c.app_key: c.secret for c in pool.credentials},
            on_rotate=rotate,
            poll_s=s.secrets.poll_s,
        )
    return Parts(
        provider=provider,
        owns_provider=owns_provider,
        breaker=CircuitBreaker(breaker_policy, clock=clock),
        degrade=DegradeControl(s, clock=clock, store=override),
        pool=pool,
        cache=cache,
        secret_files=watcher,
        redis=redis,
        replicas=replicas,
        listener=listener,
        override=override,
    )
