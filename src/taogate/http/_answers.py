"""The JSON shapes the service takes and answers, as typed dicts.

Handlers build plain dicts and encode them with orjson (no response model on any path); these
types let mypy hold those dicts to their shape, and the OpenAPI document's schemas are
generated from them (``_openapi``). An item is :class:`taogate._model.Item` itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic reads its fields on Python < 3.12

from taogate._degrade import MAX_REASON
from taogate._model import Item, Source
from taogate.quota import CredentialStatus

__all__ = [
    "AdminLookup",
    "Answer",
    "BatchResult",
    "Degrade",
    "DegradeSwitch",
    "Estimate",
    "Invalidated",
    "Job",
    "Jobs",
    "Keys",
    "Lookup",
    "Problem",
    "State",
    "SubmittedJob",
]

_CLOSED = ConfigDict(extra="forbid")
Seconds = Annotated[float, Field(ge=0)]
Money = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", description="exact decimal, yuan")]
Reason = Annotated[str | None, Field(max_length=MAX_REASON, description="logged; in /readyz")]
Text = str | None


@with_config(ConfigDict(extra="allow"))  # extensions: upstream_code, reason, line, ...
class Problem(TypedDict):
    """An RFC 9457 problem detail (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: NotRequired[str]
    instance: NotRequired[str]
    request_id: NotRequired[str]
    num_iid: NotRequired[str]
    retry_after: NotRequired[int]


class Lookup(TypedDict):
    """A found item, where it came from and how old it is."""

    item: Item
    source: Source
    stale: bool
    age_s: Seconds


class Answer(TypedDict):
    """An answer; item is null when it does not exist."""

    item: Item | None
    source: Source
    stale: bool
    age_s: float


@with_config(_CLOSED)
class Failure(TypedDict):
    """The problem that answers an id of a batch."""

    error: Problem


class BatchResult(TypedDict):
    """One result per distinct id, in request order."""

    results: dict[str, Answer | Failure]


class Invalidated(TypedDict):
    """How many of the ids were cached."""

    invalidated: int
    everywhere: Annotated[
        bool,
        Field(description="false: Redis was out of reach and only this replica forgot them"),
    ]


#: seconds until something ends, ``null`` when it is not happening
Until = Seconds | None


class CredentialRow(TypedDict):
    """A credential as the pool sees it now (its app key masked)."""

    credential: Annotated[str, Field(description="masked app key")]
    egress: Annotated[str, Field(description="the egress its calls leave through now")]
    account: Annotated[
        str | None, Field(description="the [[accounts]] entry whose limit it shares, if any")
    ]
    status: Annotated[
        str,
        Field(
            json_schema_extra={"enum": [str(s) for s in CredentialStatus]},
            description=(
                "exhausted: today's budget, or the platform's daily quota, is spent (until "
                "midnight in Beijing); not-whitelisted: the key's IP whitelist refuses every "
                "egress (paused; add the egresses' addresses on the platform)"
            ),
        ),
    ]
    rate: Annotated[float, Field(description="calls/s its limit allows now")]
    configured_qps: float
    banned_for_s: Seconds
    probe_in_s: Annotated[Until, Field(description="next probe while quarantined")]
    exhausted_for_s: Annotated[
        Until,
        Field(description="seconds to midnight in Beijing while the day's quota is spent"),
    ]
    calls: int
    calls_today: Annotated[int, Field(description="calls of the Beijing day")]
    daily_budget: int | None
    rate_limited: Annotated[int, Field(description="bans of the key (code 7)")]
    method_limited: Annotated[int, Field(description="bans of the key on the API method")]
    ip_refused: Annotated[
        int, Field(description="code 11 answers: an egress's address not in its IP whitelist")
    ]
    refused_egresses: Annotated[
        list[str], Field(description="the egresses its IP whitelist refuses now")
    ]
    invalid: Annotated[int, Field(description="refusals of the key itself (quarantines)")]
    in_flight: int
    cost: Annotated[str, Field(description="exact decimal")]
    cost_today: Annotated[str, Field(description="the Beijing day's calls x cost_per_call, exact")]


class ScopeRow(TypedDict):
    """A limit several keys share, beside their egress: a promoter account or the API method."""

    kind: Literal["account", "method"]
    name: Annotated[str, Field(description="the account's name, or the API method")]
    qps: Annotated[
        float | None, Field(description="configured calls/s; null: not paced, only paused")
    ]
    rate: Annotated[float | None, Field(description="calls/s this replica allows now")]
    credentials: Annotated[int, Field(description="keys under it")]
    calls: int
    limited: Annotated[
        int, Field(description="rate limits answered for it (code 15 / 9100, the method's bans)")
    ]
    paused_for_s: Seconds


class Keys(TypedDict):
    """One row per credential, egress and shared limit, app keys masked."""

    credentials: list[CredentialRow]
    egresses: list[dict[str, Any]]
    scopes: list[ScopeRow]
    breaker: str


class FetchedBy(TypedDict):
    credential: str
    egress: str


class AdminLookup(TypedDict):
    """An answer and its provenance."""

    num_iid: str
    item: Item
    source: Source
    stale: bool
    age_s: Seconds
    fetched_by: FetchedBy | None


class Replica(TypedDict):
    mode: Literal["single", "shared", "local"]
    live_replicas: int | None
    id: str | None


class Quota(TypedDict):
    calls_per_s: float
    rate: Annotated[float, Field(description="calls/s the pool allows")]
    use: float | None


class CredentialState(CredentialRow):
    """A credential's row and its calls/s over the console's window."""

    calls_per_s: float
    use: Annotated[float | None, Field(description="calls_per_s / rate")]


class ScopeState(ScopeRow):
    """A shared limit's row and its calls/s over the console's window."""

    calls_per_s: float
    use: Annotated[float | None, Field(description="calls_per_s / rate; null: not paced")]


class Queue(TypedDict):
    interactive: int
    refresh: int
    bulk: int
    in_flight: int
    wait_ms: float | None


class History(TypedDict):
    t: list[float | None]
    calls_per_s: list[float | None]
    quota_per_s: list[float | None]
    hit_ratio: list[float | None]


class Process(TypedDict):
    asyncio_tasks: Annotated[int, Field(description="tasks on this worker's event loop")]


class State(TypedDict):
    """This replica's view now (what the operator console shows)."""

    now: Annotated[float, Field(description="Unix time of the state")]
    process: Annotated[Process, Field(description="what a leak would grow (the soak watches it)")]
    replica: Replica
    breaker: str
    degraded: Annotated[
        dict[str, Any], Field(description="degraded mode as in /readyz (see /v1/admin/degrade)")
    ]
    code7: Annotated[int, Field(description="rate-limited answers seen here")]
    code11: Annotated[
        int, Field(description="code 11 answers seen here: an egress not in a key's IP whitelist")
    ]
    quota: Quota
    credentials: list[CredentialState]
    egresses: list[dict[str, Any]]
    scopes: Annotated[list[ScopeState], Field(description="the accounts, then the API method")]
    queue: Queue
    cache: dict[str, Any]
    window_s: float
    history: History


@with_config(_CLOSED)
class SwitchOn(TypedDict):
    """On or off regardless of the schedule, until a time if given."""

    mode: Literal["on", "off"]
    until: NotRequired[
        Annotated[
            str,
            Field(
                json_schema_extra={"format": "date-time"},
                description="RFC 3339 with its offset; the switch ends then",
            ),
        ]
    ]
    reason: NotRequired[Reason]


@with_config(_CLOSED)
class SwitchAuto(TypedDict):
    """Back to the schedule."""

    mode: Literal["auto"]
    reason: NotRequired[Reason]


DegradeSwitch = SwitchOn | SwitchAuto


class DegradeStatus(TypedDict):
    on: bool
    source: Literal["manual", "schedule"] | None
    reason: Text
    until: Text
    by: NotRequired[Text]


class Override(TypedDict):
    mode: Literal["on", "off"]
    until: NotRequired[Text]
    reason: NotRequired[Text]
    by: NotRequired[Text]
    at: NotRequired[Text]


class Degrade(TypedDict):
    """The degraded-mode state: whether it is on and why, the override and the schedule."""

    degraded: DegradeStatus
    override: Override | None
    windows: list[dict[str, Any]]
    max_age_s: float
    reserve_share: Annotated[float, Field(ge=0, le=1)]
    scope: Literal["process", "replicas"]


class Job(TypedDict):
    """A job's progress."""

    job: str
    owner: str | None
    state: Literal["queued", "running", "done", "cancelled", "failed"]
    total: int
    done: int
    found: int
    not_found: int
    failed: int
    progress: float
    created: float
    finished: float | None


class Jobs(TypedDict):
    """Jobs, newest first."""

    jobs: list[Job]


class Estimate(TypedDict):
    """Upstream calls still needed (what the cache holds fresh is left out), time and cost."""

    ids: int
    fresh_in_cache: int
    upstream_calls: int
    spare_calls_per_s: float
    seconds: float | None
    cost: Money


class SubmittedJob(Job):
    """A queued job's status and its estimate."""

    estimate: Estimate
