"""Callers of the HTTP service: bearer tokens from config, each client with its own rate.

A client's rate is a GCRA limit with a burst of one second's worth of requests. With no
``[[server.clients]]`` configured the service is open (for local use; a warning says so).

A presented token is compared by its SHA-256 digest with every configured token's, each with
``hmac.compare_digest`` and without stopping at a match, so the time taken tells nothing of
which token, or how much of one, matched. Failed attempts are limited per source address
(``_auth_failures``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taogate._masking import mask_secret
from taogate._settings import ClientSettings
from taogate.http._auth_failures import FailedAuthLimit
from taogate.http._problems import Problem
from taogate.quota.gcra import Gcra

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = ["Client", "Clients", "client_host"]


@dataclass(slots=True, eq=False)
class Client:
    """One caller: its name, whether it may use operator routes, and its limit state."""

    name: str
    admin: bool
    gcra: Gcra
    tat: float = field(default=0.0)


ANONYMOUS_RATE = 1e9


class Clients:
    """Token lookup and per-client limits."""

    def __init__(
        self,
        configured: Sequence[ClientSettings],
        *,
        clock: Callable[[], float],
        failures_per_minute: int = 20,
    ) -> None:
        self._clock = clock
        #: (SHA-256 of the token, its masked form, the client)
        self._tokens: list[tuple[bytes, str, Client]] = []
        for c in configured:
            assert c.token is not None  # resolved by the settings validator
            burst = max(1, math.ceil(c.rate))
            client = Client(c.name, c.admin, Gcra(rate=c.rate, burst=burst))
            token = c.token.get_secret_value()
            self._tokens.append((_digest(token), mask_secret(token), client))
        self.open = not self._tokens
        self._anonymous = Client("anonymous", True, Gcra(rate=ANONYMOUS_RATE, burst=1 << 30))
        self.failures = FailedAuthLimit(failures_per_minute, clock=clock)

    def authenticate(self, authorization: str | None, source: str | None = None) -> Client:
        """The client a request's ``Authorization`` header names, or a 401 problem.

        ``source`` is the caller's address: past its limit of failed attempts a failure is
        answered 429 instead (a valid token from it still passes).
        """
        if self.open:
            return self._anonymous
        if not authorization:
            self.failures.record(source)
            raise Problem(
                "unauthorized",
                "send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="taogate"'},
            )
        scheme, _, token = authorization.partition(" ")
        client = self._lookup(token.strip()) if scheme.lower() == "bearer" else None
        if client is None:
            self.failures.record(source)
            raise Problem(
                "unauthorized",
                "unknown token" if scheme.lower() == "bearer" else "use the Bearer scheme",
                headers={"WWW-Authenticate": 'Bearer realm="taogate", error="invalid_token"'},
            )
        return client

    def _lookup(self, token: str) -> Client | None:
        """The client whose token is ``token``: every digest compared, in constant time."""
        digest = _digest(token)
        found = None
        for known, _, client in self._tokens:
            if hmac.compare_digest(digest, known):
                found = client
        return found

    def admit(self, client: Client) -> None:
        """Count one request against the client's rate, or raise a 429 problem."""
        now = self._clock()
        decision = client.gcra.check(client.tat, now)
        if decision.allowed:
            client.tat = decision.tat
            return
        retry = max(1, math.ceil(decision.retry_after))
        limit = client.gcra.burst
        raise Problem(
            "client-rate-limited",
            f"client {client.name!r} is over its rate of {client.gcra.rate:g} requests/s",
            headers={
                "Retry-After": str(retry),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry),
                "RateLimit-Policy": f"{limit};w=1",
            },
            retry_after=retry,
        )

    def describe(self) -> list[str]:
        """Configured client names with masked tokens, for start-up logs."""
        return [f"{c.name} ({masked})" for _, masked, c in self._tokens]


def client_host(scope: Scope) -> str | None:
    """The caller's address in an ASGI ``scope`` (what failed attempts are limited by)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
