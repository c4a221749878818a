"""Every error taogate raises, under one root.

The tree::

    TaogateError
    ├── ConfigurationError          a settings file or value is wrong (the CLI exits with code 2)
    ├── InvalidRequest              refused before anything was sent
    │   ├── InvalidItemId           an id does not match the id policy
    │   └── BatchTooLarge           more ids than the provider takes in one call
    ├── ItemNotFound                the upstream answered and the item is not there
    ├── DegradeNotShared            a degrade switch could not reach Redis; nothing changed
    ├── JobLimitReached             a client has as many jobs or ids as it may (carries retry_after)
    ├── LookupFailed                no answer could be had in time (each carries retry_after)
    │   ├── Overloaded              the queue ahead cannot be served before the deadline
    │   ├── DeadlineExceeded        the deadline passed before the answer came
    │   └── UpstreamUnavailable     the breaker is open
    │       └── NoCredentialAvailable   every credential is quarantined or out of budget
    └── UpstreamError               the upstream (or the way to it) failed; carries context
        ├── RateLimited             codes 4-8, 15/9100, reseller quota codes: pause its scope
        ├── IpNotWhitelisted        code 11 ip-whitelist: the key refuses this egress's address
        ├── CredentialInvalid       codes 11-13, 25, 27, 29: quarantine the credential
        ├── UpstreamBadRequest      codes 40/41/43/50, ``isv.*``, old-format ids: do not retry
        ├── ProtocolMismatch        codes 9, 21-24, 26, 28, 30-34: our request is wrong for all
        ├── ItemUnreadable          one id's item in an answer cannot be read: that id fails alone
        └── UpstreamTransient       codes 10/15, ``isp.*``, HTTP 5xx, timeouts, bad bodies: retry
            └── EgressUnreachable   no connection through the credential's egress (proxy, address)

Messages and attributes never hold a secret: credentials appear as masked ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = [
    "BatchTooLarge",
    "ConfigurationError",
    "CredentialInvalid",
    "DeadlineExceeded",
    "DegradeNotShared",
    "InvalidItemId",
    "InvalidRequest",
    "IpNotWhitelisted",
    "ItemNotFound",
    "ItemUnreadable",
    "JobLimitReached",
    "LimitScope",
    "LookupFailed",
    "NoCredentialAvailable",
    "Overloaded",
    "ProtocolMismatch",
    "RateLimited",
    "TaogateError",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamTransient",
    "UpstreamUnavailable",
]


class TaogateError(Exception):
    """The root of every error taogate raises."""


class ConfigurationError(TaogateError):
    """A settings file or value is wrong; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequest(TaogateError):
    """A lookup was refused before anything was sent upstream."""


class InvalidItemId(InvalidRequest):
    """An item id does not match the id policy."""

    def __init__(self, num_iid: str, reason: str) -> None:
        shown = num_iid if len(num_iid) <= 40 else num_iid[:37] + "..."
        super().__init__(f"invalid item id {shown!r}: {reason}")
        self.num_iid = num_iid
        self.reason = reason


class BatchTooLarge(InvalidRequest):
    """More ids than the provider accepts in one call."""

    def __init__(self, size: int, max_batch: int) -> None:
        super().__init__(f"batch of {size} ids exceeds the provider's maximum of {max_batch}")
        self.size = size
        self.max_batch = max_batch


class ItemNotFound(TaogateError):
    """The upstream answered successfully and the item was not in the answer."""

    def __init__(self, num_iid: str) -> None:
        super().__init__(f"item {num_iid} does not exist")
        self.num_iid = num_iid


class DegradeNotShared(TaogateError):
    """A degraded-mode switch could not be written to Redis, so no replica changed (not even
    this one: the replicas must not disagree about it)."""


class JobLimitReached(TaogateError):
    """A client's job submission is over one of its caps: ``limit`` is ``"active"`` (jobs in
    progress) or ``"ids_per_day"``; ``retry_after`` is when a retry may pass, in seconds."""

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class LookupFailed(TaogateError):
    """No answer could be had within the lookup's deadline; ``retry_after`` hints when to retry."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(LookupFailed):
    """The queue ahead of the lookup cannot be served at the current quota before its deadline."""


class DeadlineExceeded(LookupFailed):
    """The lookup's deadline passed before an answer came."""


class UpstreamUnavailable(LookupFailed):
    """The upstream cannot be asked now: the breaker is open or no credential is usable."""


class NoCredentialAvailable(UpstreamUnavailable):
    """Every credential is quarantined or out of budget (or none can send before the deadline)."""


class UpstreamError(TaogateError):
    """The upstream refused or failed a call.

    ``credential`` is the masked id of the credential used, ``request_id`` the upstream's own
    request id when it gave one; ``code``/``sub_code`` are the upstream's error codes.
    """

    def __init__(
        self,
        message: str,
        *,
        credential: str | None = None,
        request_id: str | None = None,
        code: int | str | None = None,
        sub_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.credential = credential
        self.request_id = request_id
        self.code = code
        self.sub_code = sub_code

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.sub_code:
            parts.append(f"sub_code={self.sub_code}")
        if self.credential:
            parts.append(f"credential={self.credential}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


#: What a rate limit counts (docs/limits.md): ``app`` the key over all methods (code 7, a daily
#: quota when the ban lasts until midnight), ``api`` one method over every key, ``app_api`` the
#: key on one method, ``account`` every key of one promoter account (code 15 / ``9100``),
#: ``unknown`` a limit the answer does not name (treated as the key's).
LimitScope = Literal["app", "api", "app_api", "account", "unknown"]


class RateLimited(UpstreamError):
    """The upstream throttled a call; ``retry_after`` is the ban in seconds and ``scope``
    (:data:`LimitScope`) says which limit it counts against."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        scope: LimitScope = "unknown",
        credential: str | None = None,
        request_id: str | None = None,
        code: int | str | None = None,
        sub_code: str | None = None,
    ) -> None:
        super().__init__(
            message, credential=credential, request_id=request_id, code=code, sub_code=sub_code
        )
        self.retry_after = retry_after
        self.scope: LimitScope = scope

    def __str__(self) -> str:
        return f"{super().__str__()} retry_after={self.retry_after:g}s scope={self.scope}"


class IpNotWhitelisted(UpstreamError):
    """The key accepts calls only from its registered server addresses, and this call's egress
    is not one of them (code 11, ``isv.permission-ip-whitelist-limit``).

    A mismatch between the key and the egress, not a bad key: the key's calls move to another
    egress (or the pair pauses); the key is never quarantined for it.
    """


class CredentialInvalid(UpstreamError):
    """The credential is refused (bad signature or key, revoked, no permission)."""


class UpstreamBadRequest(UpstreamError):
    """The upstream refused the ids of this call; retrying the same call cannot help.

    ``ids`` names the offending ids when the upstream said which (else the whole call's ids).
    """

    def __init__(
        self,
        message: str,
        *,
        ids: Sequence[str] = (),
        credential: str | None = None,
        request_id: str | None = None,
        code: int | str | None = None,
        sub_code: str | None = None,
    ) -> None:
        super().__init__(
            message, credential=credential, request_id=request_id, code=code, sub_code=sub_code
        )
        self.ids = tuple(ids)


class ProtocolMismatch(UpstreamError):
    """The upstream refused the request itself (method, version, timestamp, format).

    It fails every call alike, whatever the ids: an operator has to fix configuration or clock.
    """


class ItemUnreadable(UpstreamError):
    """The upstream answered for ``num_iid``, but that item cannot be used: a price that is not
    a number or out of bounds, a field of the wrong shape, or an answer that does not say
    clearly which item is this id's.

    It fails that id alone (the rest of its call is served), is not retried and is never cached
    as "not found". ``reason`` is taogate's own text, naming the field.
    """

    def __init__(
        self,
        num_iid: str,
        reason: str,
        *,
        credential: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            f"the upstream's answer for item {num_iid} cannot be used: {reason}",
            credential=credential,
            request_id=request_id,
        )
        self.num_iid = num_iid
        self.reason = reason


class UpstreamTransient(UpstreamError):
    """A fault that may pass: server errors, timeouts, resets, malformed answers."""


class EgressUnreachable(UpstreamTransient):
    """No connection could be made through an egress (its proxy or local address, or the
    upstream from there). With other egresses working, the egress pauses and the call moves on.
    """

    def __init__(self, message: str, *, egress: str, credential: str | None = None) -> None:
        super().__init__(message, credential=credential)
        self.egress = egress
