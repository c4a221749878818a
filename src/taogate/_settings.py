"""Configuration: one TOML file, every value overridable by ``TAOGATE_*`` environment variables.

Nested values use ``__``: ``TAOGATE_UPSTREAM__URL``, ``TAOGATE_LIMITS__SAFETY_FACTOR``; lists take
JSON (``TAOGATE_CREDENTIALS='[{"app_key": "...", "secret_env": "KEY1_SECRET"}]'``). The file and
the environment are read once, at the edge, into a frozen :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import tomllib
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from taogate._credentials import DEFAULT_EGRESS, IP_QPS, Credential, Egress
from taogate._errors import ConfigurationError
from taogate._ids import DEFAULT_ID_PATTERN, IdPolicy
from taogate._masking import Redactor, mask_id, mask_secret, mask_url, url_passwords
from taogate._secrets import read_secret_file

__all__ = [
    "MIN_TOKEN_CHARS",
    "CacheSettings",
    "ClientSettings",
    "CredentialSettings",
    "DegradeSettings",
    "DegradeWindow",
    "EdgeCacheSettings",
    "EgressSettings",
    "JobsSettings",
    "LimitsSettings",
    "RedisSettings",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
    "SimSettings",
    "UpstreamSettings",
    "load_settings",
]

TOP_METHODS = ("taobao.tbk.item.info.get", "taobao.tbk.item.info.upgrade.get")
SignMethod = Literal["md5", "hmac", "hmac-sha256"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _resolve_secret(inline: SecretStr | None, env_name: str | None, what: str) -> SecretStr:
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


class UpstreamSettings(_Section):
    """``[upstream]``: which API taogate calls and how."""

    kind: Literal["top", "reseller"] = "top"
    url: str = "https://eco.taobao.com/router/rest"
    method: Literal["taobao.tbk.item.info.get", "taobao.tbk.item.info.upgrade.get"] = (
        "taobao.tbk.item.info.get"
    )
    sign_method: SignMethod = "hmac-sha256"
    simplify: bool = False
    timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    #: The largest upstream answer read, in bytes; a larger one is a transient failure.
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    id_pattern: str = DEFAULT_ID_PATTERN
    #: Extra business parameters sent with every call (``platform``, ``biz_scene_id``, ...).
    params: dict[str, str] = Field(default_factory=dict)

    @field_validator("id_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            IdPolicy(pattern=value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def id_policy(self) -> IdPolicy:
        return IdPolicy(pattern=self.id_pattern)


class CredentialSettings(_Section):
    """``[[credentials]]``: one app key; its secret inline, from ``secret_env`` or ``secret_file``.

    ``secret_file`` is a file a secret store mounts (Vault agent, the Secrets Store CSI driver,
    a Kubernetes Secret volume); it is read at start and again whenever it changes, so the
    secret can be rotated without a restart (see ``[secrets]``).
    """

    app_key: str = Field(min_length=1)
    secret: SecretStr | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    qps: float = Field(default=10.0, gt=0)
    daily_budget: int | None = Field(default=None, ge=1)
    cost_per_call: Decimal = Field(default=Decimal(0), ge=0)
    egress: str | None = None

    @model_validator(mode="after")
    def _secret_given(self) -> Self:
        given = (self.secret, self.secret_env, self.secret_file)
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of secret, secret_env or secret_file")
        if self.secret_file is None:
            secret = _resolve_secret(self.secret, self.secret_env, "secret")
        else:
            try:  # the message names the file, never its content
                secret = SecretStr(read_secret_file(self.secret_file))
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        object.__setattr__(self, "secret", secret)
        return self

    def to_credential(self) -> Credential:
        assert self.secret is not None  # resolved by the validator
        return Credential(
            app_key=self.app_key,
            secret=self.secret.get_secret_value(),
            qps=self.qps,
            daily_budget=self.daily_budget,
            cost_per_call=self.cost_per_call,
            egress=self.egress,
        )


class CacheSettings(_Section):
    """``[cache]``: freshness and the L1 bound."""

    max_age_s: float = Field(default=600.0, gt=0)
    max_stale_s: float = Field(default=3600.0, ge=0)
    l1_max_entries: int = Field(default=100_000, ge=1)
    l1_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    negative_ttl_s: float = Field(default=120.0, gt=0)
    ttl_jitter: float = Field(default=0.1, ge=0, lt=1)


class DegradeWindow(_Section):
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


class DegradeSettings(_Section):
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


class RedisSettings(_Section):
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


class ClientSettings(_Section):
    """``[[server.clients]]``: a caller of the HTTP service and its own rate."""

    name: str = Field(min_length=1)
    token: SecretStr | None = None
    token_env: str | None = None
    rate: float = Field(default=100.0, gt=0)
    admin: bool = False

    @model_validator(mode="after")
    def _token_given(self) -> Self:
        token = _resolve_secret(self.token, self.token_env, "token")
        if len(token.get_secret_value()) < MIN_TOKEN_CHARS:  # the message never shows the token
            raise ValueError(
                f"client {self.name!r}: its token is shorter than {MIN_TOKEN_CHARS} characters; "
                "use a long random one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        object.__setattr__(self, "token", token)
        return self


class EdgeCacheSettings(_Section):
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


class ServerSettings(_Section):
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


class EgressSettings(_Section):
    """``[[egress]]``: a way out to the upstream (an HTTP proxy or a local address)."""

    name: str = Field(min_length=1)
    #: ``http://[user:password@]host:port``: calls go through this HTTP(S) proxy
    proxy: str | None = None
    #: a local IP address to bind outgoing connections to (one of the host's addresses)
    local_address: str | None = None
    #: calls per second of all credentials on this egress together; default 100 (what the
    #: platform's risk control watches per calling IP) × ``[limits] safety_factor``
    max_qps: float | None = Field(default=None, gt=0)

    def __repr__(self) -> str:
        proxy = mask_url(self.proxy) if self.proxy else None
        return (
            f"EgressSettings(name={self.name!r}, proxy={proxy!r}, "
            f"local_address={self.local_address!r}, max_qps={self.max_qps})"
        )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// proxy URL")
        return value


class LimitsSettings(_Section):
    """``[limits]``: how close to the platform's limits taogate runs, and its deadlines."""

    safety_factor: float = Field(default=0.8, gt=0, le=1)
    batch_window_ms: float = Field(default=10.0, ge=0)
    deadline_s: float = Field(default=3.0, gt=0)


class JobsSettings(_Section):
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


class SecretsSettings(_Section):
    """``[secrets]``: how ``secret_file`` secrets are kept current."""

    #: Seconds between checks of every ``secret_file`` for a new secret; 0 checks only on
    #: SIGHUP (``taogate serve``), ``Gateway.reload_secrets()`` and a refused credential.
    poll_s: float = Field(default=2.0, ge=0)


class SimSettings(_Section):
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

    @field_validator("latency_ms")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low < 0 or high < low:
            raise ValueError("latency_ms must be [low, high] with 0 <= low <= high")
        return value


class Settings(BaseSettings):
    """Everything taogate reads from ``taogate.toml`` and ``TAOGATE_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="TAOGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    credentials: list[CredentialSettings] = Field(default_factory=list)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    degrade: DegradeSettings = Field(default_factory=DegradeSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    egress: list[EgressSettings] = Field(default_factory=list)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which load_settings passes as init values.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _names_consistent(self) -> Self:
        keys = [c.app_key for c in self.credentials]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"app_key listed twice: {', '.join(mask_id(k) for k in duplicates)}")
        egress_names = [e.name for e in self.egress]
        if len(set(egress_names)) != len(egress_names):
            raise ValueError("egress name listed twice")
        for c in self.credentials:
            if c.egress is not None and c.egress not in egress_names:
                who = mask_id(c.app_key)
                raise ValueError(f"credential {who} names unknown egress {c.egress!r}")
        return self

    @model_validator(mode="after")
    def _degrade_fits_cache(self) -> Self:
        wanted = self.degrade.max_age_s
        if wanted is None:
            return self
        low, high = self.cache.max_age_s, self.cache.max_age_s + self.cache.max_stale_s
        if not low <= wanted <= high:
            raise ValueError(
                f"degrade.max_age_s must be between [cache] max_age_s ({low:g}) and what the "
                f"cache keeps, max_age_s + max_stale_s ({high:g}); it is {wanted:g}"
            )
        return self

    @property
    def degraded_max_age_s(self) -> float:
        """How old an answer degraded mode serves as fresh (``[degrade] max_age_s`` resolved)."""
        if self.degrade.max_age_s is not None:
            return self.degrade.max_age_s
        return self.cache.max_age_s + self.cache.max_stale_s

    def secret_values(self) -> list[str]:
        """Every secret, token and password configured, for redaction (never for display)."""
        values = [c.secret.get_secret_value() for c in self.credentials if c.secret is not None]
        values += [c.token.get_secret_value() for c in self.server.clients if c.token is not None]
        urls = [self.redis.url, *(e.proxy for e in self.egress)]
        values += [p for url in urls if url for p in url_passwords(url)]
        return [v for v in values if v]

    def redactor(self) -> Redactor:
        """What makes upstream text safe to show: every secret above out, cut short."""
        return Redactor(self.secret_values())

    def build_egresses(self) -> list[Egress]:
        """The egresses as the library takes them; one implicit egress when none is set."""
        default_qps = IP_QPS * self.limits.safety_factor
        if not self.egress:
            return [Egress(name=DEFAULT_EGRESS, max_qps=default_qps)]
        return [
            Egress(
                name=e.name,
                max_qps=default_qps if e.max_qps is None else e.max_qps,
                proxy=e.proxy,
                local_address=e.local_address,
            )
            for e in self.egress
        ]

    def build_credentials(self) -> list[Credential]:
        """The credentials as the library takes them, each on its egress.

        Credentials that name no egress are spread over the configured egresses in turn, so
        that no single calling IP carries them all.
        """
        names = [e.name for e in self.build_egresses()]
        spread = itertools.cycle(names)
        out = []
        for c in self.credentials:
            credential = c.to_credential()
            egress = c.egress if c.egress is not None else next(spread)
            out.append(dataclasses.replace(credential, egress=egress))
        return out

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for ``taogate config check``."""
        data = self.model_dump(mode="json")
        for raw, cred in zip(data["credentials"], self.credentials, strict=True):
            assert cred.secret is not None
            raw["secret"] = mask_secret(cred.secret.get_secret_value())
        for raw, client in zip(data["server"]["clients"], self.server.clients, strict=True):
            assert client.token is not None
            raw["token"] = mask_secret(client.token.get_secret_value())
        if self.redis.url:
            data["redis"]["url"] = mask_url(self.redis.url)
        for raw in data["egress"]:
            if raw.get("proxy"):
                raw["proxy"] = mask_url(raw["proxy"])
        return data


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read ``path`` (TOML) and the ``TAOGATE_*`` environment into :class:`Settings`.

    Raises :class:`ConfigurationError` naming the first wrong field; no secret is in the message.
    """
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            with Path(path).open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigurationError(f"{source}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except SettingsError as exc:  # a TAOGATE_* value that is not what it should be (bad JSON)
        # the message names the variable's field; the value itself may hold a secret
        name = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "a TAOGATE_* variable"
        raise ConfigurationError(
            f"environment: {name}: not a valid value (complex values are JSON)", field=name
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = _format_location(tuple(first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        more = exc.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigurationError(f"{source}: {where}: {message}{suffix}", field=where) from None
