"""The sections of the settings that shape the service: cache, degraded mode, Redis, the HTTP
server and its clients, bulk jobs and the simulator; and what every section is built on."""

from __future__ import annotations

import ipaddress
import os
from datetime import datetime
from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from taogate._masking import mask_url

__all__ = [
    "MIN_TOKEN_CHARS",
    "CacheSettings",
    "ClientSettings",
    "DegradeSettings",
    "DegradeWindow",
    "EdgeCacheSettings",
    "JobsSettings",
    "RedisSettings",
    "Section",
    "ServerSettings",
    "SimKeySettings",
    "SimSettings",
    "resolve_secret",
]


class Section(BaseModel):
    """A ``[section]`` of the settings: frozen, and no field it does not name."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def resolve_secret(inline: SecretStr | None, env_name: str | None, what: str) -> SecretStr:
    """The secret given inline or through an environment variable (exactly one of the two)."""
    if (inline is None) == (env_name is None):
        raise ValueError(f"give exactly one of {what} or {what}_env")
    if env_name is not None:
        value = os.environ.get(env_name)
        if not value:
            raise ValueError(f"environment variable {env_name} ({what}_env) is not set or empty")
        return SecretStr(value)
    assert inline is not None
    if not inline.get_secret_value():
        raise ValueError(f"{what} is empty")
    return inline


class CacheSettings(Section):
    """``[cache]``: freshness and the L1 bound."""

    max_age_s: float = Field(default=600.0, gt=0)
    max_stale_s: float = Field(default=3600.0, ge=0)
    l1_max_entries: int = Field(default=100_000, ge=1)
    l1_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    negative_ttl_s: float = Field(default=120.0, gt=0)
    ttl_jitter: float = Field(default=0.1, ge=0, lt=1)


class DegradeWindow(Section):
    """``[[degrade.windows]]``: a known peak (a sale such as 双11) when degraded mode is on.

    ``start`` and ``end`` are offset datetimes (TOML ``2026-11-11T00:00:00+08:00``): a time
    without a UTC offset is refused, since the replicas' own time zones must not decide it.
    """

    start: datetime
    end: datetime
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("start", "end")
    @classmethod
    def _has_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "needs a UTC offset, e.g. 2026-11-11T00:00:00+08:00 (Beijing time) or ...Z"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start")
        return self


class DegradeSettings(Section):
    """``[degrade]``: what degraded mode does, and when it is on by schedule.

    While degraded, lookups without their own ``max_age`` take cached answers up to
    ``max_age_s`` old, refresh-ahead stops, the bulk-job worker takes no new chunks, and
    lookups that are not interactive may use at most ``1 - reserve_share`` of the quota.
    An operator switches it at run time (``PUT /v1/admin/degrade``, ``taogate degrade``).
    """

    #: Oldest answer served as fresh while degraded; ``None``: all the cache keeps
    #: (``[cache] max_age_s + max_stale_s``). At least ``[cache] max_age_s``, at most that sum.
    max_age_s: float | None = Field(default=None, gt=0)
    #: Share of the quota kept for interactive misses while degraded: refresh and bulk lookups
    #: may use at most ``1 - reserve_share`` of it (1: none at all).
    reserve_share: float = Field(default=0.3, ge=0, le=1)
    windows: list[DegradeWindow] = Field(default_factory=list)


class RedisSettings(Section):
    """``[redis]``: absent ``url`` means single-process mode.

    ``url`` is ``redis://``/``rediss://``/``unix://`` for one node (or a proxy),
    ``redis+sentinel://host:26379,host2:26379/mymaster`` for Sentinel; ``cluster = true`` uses
    redis-py's cluster client with ``url`` naming any node.
    """

    url: str | None = None
    cluster: bool = False
    #: Every key taogate writes starts with it (several gateways can share one Redis).
    prefix: str = Field(default="tg", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    #: Bound on any one Redis call; past it the call counts as failed. No request waits longer.
    timeout_s: float = Field(default=0.25, gt=0, le=10)
    heartbeat_s: float = Field(default=1.0, gt=0)
    #: A replica silent this long no longer counts as live.
    replica_ttl_s: float = Field(default=5.0, gt=0)
    #: A replica that went silent (not stopped cleanly) may be cut off from Redis and deciding
    #: on its share alone; the others leave it that share for this long.
    departed_memory_s: float = Field(default=300.0, ge=0)
    #: Replicas to assume before the first heartbeat has counted them (a replica that starts
    #: while Redis is down decides alone on 1/this of each quota).
    expected_replicas: int = Field(default=3, ge=1)
    #: Shared L2 cache of answers (with Redis configured).
    l2: bool = True

    def __repr__(self) -> str:
        return f"RedisSettings(url={mask_url(self.url) if self.url else None!r})"


#: Fewest characters a client token may have (a random token of 32 URL-safe characters holds
#: 192 bits: past guessing, even without the limit on failed attempts).
MIN_TOKEN_CHARS = 32


class ClientSettings(Section):
    """``[[server.clients]]``: a caller of the HTTP service and its own rate."""

    name: str = Field(min_length=1)
    token: SecretStr | None = None
    token_env: str | None = None
    rate: float = Field(default=100.0, gt=0)
    admin: bool = False

    @model_validator(mode="after")
    def _token_given(self) -> Self:
        token = resolve_secret(self.token, self.token_env, "token")
        if len(token.get_secret_value()) < MIN_TOKEN_CHARS:  # the message never shows the token
            raise ValueError(
                f"client {self.name!r}: its token is shorter than {MIN_TOKEN_CHARS} characters; "
                "use a long random one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        object.__setattr__(self, "token", token)
        return self


class EdgeCacheSettings(Section):
    """``[server.edge_cache]``: HTTP caching headers on item answers, for a CDN or proxy cache.

    A found item (``GET /v1/items/{num_iid}``) carries ``Cache-Control`` with ``max-age`` set to
    what remains of its freshness (0 for a stale answer), a weak ``ETag`` of its content and
    ``Last-Modified`` (when it was fetched); ``If-None-Match`` is answered with 304.
    """

    enabled: bool = True
    #: ``public`` lets shared caches (a CDN) keep answers to authenticated requests and serve
    #: them to anyone who can reach the cache; ``false`` sends ``private`` (browsers only).
    public: bool = True
    #: ``stale-while-revalidate``: seconds a cache may serve an expired answer while it fetches
    #: a new one in the background.
    stale_while_revalidate_s: int = Field(default=30, ge=0)
    #: ``stale-if-error``: seconds a cache may serve an expired answer when taogate fails;
    #: unset, ``[cache] max_stale_s`` (taogate's own limit for serving stale).
    stale_if_error_s: int | None = Field(default=None, ge=0)
    #: ``max-age`` of a 404 "item does not exist" (at most what remains of ``negative_ttl_s``);
    #: 0 sends ``no-store``. Every other problem answer is ``no-store``.
    not_found_max_age_s: int = Field(default=60, ge=0)


class ServerSettings(Section):
    """``[server]``: the HTTP service."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    clients: list[ClientSettings] = Field(default_factory=list)
    #: ``/metrics`` needs a client token too (health routes never do).
    metrics_token_required: bool = False
    #: Requests in progress at once; beyond it a request is shed with 503 at once.
    max_in_flight: int = Field(default=2048, ge=1)
    #: Most ids in one ``POST /v1/items:batch``.
    max_batch_ids: int = Field(default=1000, ge=1)
    #: Largest request body in bytes.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Log one JSON line per request (costs CPU on the hit path; errors are always logged).
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Seconds a shutdown waits for requests in progress to finish.
    graceful_shutdown_s: float = Field(default=10.0, ge=0)
    #: Seconds a client may take to send a request's line and headers; past it the connection
    #: is answered 408 and closed (a fresh connection that sends nothing is closed).
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: Seconds a client may take to send a request's whole body; past it 408 and the connection
    #: is closed. A body being received holds no ``max_in_flight`` slot.
    body_timeout_s: float = Field(default=30.0, gt=0)
    #: Largest request line plus headers in bytes; past it 431 and the connection is closed.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: Failed authentications allowed per source address (IPv6: per /64) and minute; past it a
    #: failed attempt is answered 429 with ``Retry-After`` (a valid token still passes).
    auth_failures_per_minute: int = Field(default=20, ge=1)
    #: ``taogate serve`` on an address other than loopback without any ``[[server.clients]]``
    #: refuses to start unless this is true (an open API on the network).
    allow_anonymous: bool = False
    edge_cache: EdgeCacheSettings = Field(default_factory=EdgeCacheSettings)


class JobsSettings(Section):
    """``[jobs]``: bulk jobs (they need ``[redis]``)."""

    enabled: bool = True
    #: Most ids in one job (a text body, one id a line).
    max_ids: int = Field(default=1_000_000, ge=1)
    #: Most ids in a JSON body ``{"ids": [...]}``.
    max_json_ids: int = Field(default=100_000, ge=1)
    #: Jobs of one client queued or running at once (every replica together); one more is
    #: refused with 429.
    max_active_per_client: int = Field(default=10, ge=1)
    #: Ids one client may submit per Beijing day (every replica together); past it, 429 until
    #: midnight Beijing time.
    max_ids_per_client_per_day: int = Field(default=10_000_000, ge=1)
    #: Chunks of 40 ids a replica works on at once. Enough that bulk ids always wait in the
    #: dispatcher when a call is spare (calls/s × (RTT + Redis writes) chunks per replica), few
    #: enough that a cancel stops the work soon.
    concurrency: int = Field(default=32, ge=1)
    #: A chunk untouched this long (its worker died) is claimed by another worker.
    claim_idle_s: float = Field(default=30.0, gt=0)
    #: How long a job and its rows are kept after its last change (submit, rows, end, cancel).
    result_ttl_s: float = Field(default=86_400.0, gt=0)
    #: Deadline of one chunk's lookups (bulk waits behind interactive traffic).
    deadline_s: float = Field(default=120.0, gt=0)
    #: Tries of one chunk (deliveries: a late answer, an error, a worker that died on it)
    #: before its ids get ``failed`` rows.
    max_attempts: int = Field(default=5, ge=1, le=100)


def _method_caps(value: dict[str, float]) -> dict[str, float]:
    """Caps per API method, each a finite limit > 0 (the simulator checks the names it serves)."""
    for method, qps in value.items():
        if not method:
            raise ValueError("a method name is empty")
        if not 0 < qps < float("inf"):
            raise ValueError(f"{method}: the limit must be a finite number > 0, not {qps!r}")
    return value


def _addresses(value: tuple[str, ...]) -> tuple[str, ...]:
    """IP addresses, each checked and written the way a connection's peer address is."""
    out = []
    for address in value:
        try:
            out.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address") from None
    return tuple(out)


class SimKeySettings(Section):
    """``[sim.keys."<app_key>"]``: the simulator's limits for one credential's key."""

    #: Source addresses the key may call from (code 11 from any other); empty: any address.
    whitelist: tuple[str, ...] = ()
    #: Accepted calls per Beijing day; past it, code 7 until midnight Beijing time.
    daily_quota: int | None = Field(default=None, ge=0)
    #: Calls per second of this key on one method (code 7 ``limited-by-app-api-access-count``).
    method_qps: dict[str, float] = Field(default_factory=dict)

    _check_whitelist = field_validator("whitelist")(_addresses)
    _check_method_qps = field_validator("method_qps")(_method_caps)


class SimSettings(Section):
    """``[sim]``: the TOP simulator (``taogate sim``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    #: Calls per second per app key; ``None`` takes each credential's own ``qps``.
    qps: float | None = Field(default=None, gt=0)
    ban_s: float = Field(default=10.0, ge=0)
    latency_ms: tuple[float, float] = (200.0, 500.0)
    catalog_size: int = Field(default=100_000, ge=1)
    absent_ratio: float = Field(default=0.02, ge=0, le=1)
    seed: int = 1
    #: Mean price changes per item per hour.
    price_changes_per_hour: float = Field(default=1.0, ge=0)
    #: Share of catalog items that carry a coupon (``coupon_amount``/``coupon_start_fee``).
    coupon_ratio: float = Field(default=0.3, ge=0, le=1)
    #: Share of catalog ids in the old format, refused with code 15 / sub_code -4003.
    legacy_ratio: float = Field(default=0.0, ge=0, le=1)
    cost_per_call: Decimal = Field(default=Decimal("0.01"), ge=0)
    max_skew_s: float = Field(default=600.0, gt=0)
    #: Calls per second of one API method over every key (code 7
    #: ``limited-by-api-access-count``), e.g. ``{"taobao.tbk.item.info.get" = 50}``; a method
    #: not named has no such cap.
    method_qps: dict[str, float] = Field(default_factory=dict)
    #: How long a method stays banned for every key after going over its ``method_qps``.
    method_ban_s: float = Field(default=3.0, ge=0)
    #: How long a key × method pair stays banned after going over the key's ``method_qps``.
    pair_ban_s: float = Field(default=2.0, ge=0)
    #: Per-key limits by app_key: ``[sim.keys."12345678"] whitelist = ["127.0.0.2"]``.
    keys: dict[str, SimKeySettings] = Field(default_factory=dict)

    _check_method_qps = field_validator("method_qps")(_method_caps)

    @field_validator("latency_ms")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low < 0 or high < low:
            raise ValueError("latency_ms must be [low, high] with 0 <= low <= high")
        return value
