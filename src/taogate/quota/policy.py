"""How the pool paces and protects credentials, and the scopes it builds from that.

:class:`PoolPolicy` holds the knobs (the safety factor, bursts, window guards, AIMD, probes,
egress pauses) and builds each limit scope a call consumes from (docs/limits.md): an app key,
its promoter account, the API method over every key, the key on that method, and the egress IP.
A new kind of limit gets its builder here and its place in a member's scopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from taogate._credentials import Account, Credential, Egress
from taogate.quota.health import Aimd, Backoff, Quarantine
from taogate.quota.scopes import Scope

__all__ = ["EGRESS_BURST", "PoolPolicy"]

#: An egress paces its keys' calls with room for one call of catch-up, so that a grant made
#: late (timers, a round trip to Redis) does not lose its slot for good; its window (no more
#: than ``max_qps`` calls in any second plus the guard) is what holds the cap.
EGRESS_BURST = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolPolicy:
    """How the pool paces and protects credentials."""

    safety_factor: float = 0.8
    burst: int = 1
    window_guard_s: float = 0.05  # jitter between a grant and the upstream seeing the call
    #: extra margin of a replica's own window while it decides alone for a share of the quota
    local_guard_s: float = 0.1
    #: how long past its slot an urgent (interactive) waiter's claim holds other replicas'
    #: refresh and bulk calls off it: the waiter's wake-up and round trip to Redis
    claim_s: float = 0.03
    #: the window guard of an egress's cap (of all its keys' calls together): as a key's. Measured
    #: on loopback, 40 and 45 ms let a 21st call into one second now and then (send jitter)
    egress_window_guard_s: float = 0.05
    #: transport failures in a row after which an egress pauses (while another one works)
    egress_failures: int = 3
    #: the first pause of a failing egress; each further pause doubles, up to the max
    egress_pause_s: float = 5.0
    max_egress_pause_s: float = 120.0
    aimd_decrease: float = 0.5
    aimd_min_factor: float = 0.25
    recovery_per_s: float = 0.01
    probe_after_s: float = 30.0
    max_probe_after_s: float = 1800.0
    #: a key × method pair's bans: the longest pause, and the quiet after which it starts over
    max_pair_pause_s: float = 300.0
    pair_reset_after_s: float = 60.0
    #: a key refused by an egress's address (its IP whitelist) with no other egress to use:
    #: the first pause of the pair, doubling with each refusal up to the max
    whitelist_pause_s: float = 60.0
    max_whitelist_pause_s: float = 3600.0
    #: with several egresses, a key's first call through an egress goes alone, so that an
    #: egress the key's IP whitelist refuses costs one refused call, not every call in flight
    prove_egress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.safety_factor <= 1:
            raise ValueError("safety_factor must be in (0, 1]")
        if not 0 < self.aimd_min_factor <= 1 or not 0 < self.aimd_decrease < 1:
            raise ValueError("AIMD factors must be in (0, 1)")

    def _aimd(self) -> Aimd:
        return Aimd(
            decrease=self.aimd_decrease,
            min_factor=self.aimd_min_factor,
            recovery_per_s=self.recovery_per_s,
        )

    def key_scope(self, credential: Credential) -> Scope:
        """An app key's scope: ``qps × safety_factor``, its bursts, its rate cut after bans."""
        return Scope(
            kind="key",
            name=f"key:{credential.masked}",
            id=f"key:{credential.app_key}",
            qps=credential.qps,
            pace=self.safety_factor,
            burst=self.burst,
            guard_s=self.window_guard_s,
            local_guard_s=self.local_guard_s,
            aimd=self._aimd(),
        )

    def account_scope(self, account: Account) -> Scope:
        """A promoter account's scope: ``qps × safety_factor`` for all its keys together; its
        limit's answer (code 15 / ``9100``) pauses it and cuts its rate like a key's ban."""
        return self._shared("account", account.name, account.qps, aimd=self._aimd())

    def method_scope(self, method: str, qps: float | None) -> Scope:
        """An API method's scope over every key: paced at ``qps × safety_factor`` when the
        platform's cap is known, else only paused for the seconds its bans name (never a cut
        of any key's rate)."""
        return self._shared("method", method, qps, aimd=None)

    def _shared(
        self, kind: Literal["account", "method"], name: str, qps: float | None, aimd: Aimd | None
    ) -> Scope:
        """A scope several keys share, paced like a key (``qps × safety_factor``, its window
        guards) with one call of catch-up (:data:`EGRESS_BURST`)."""
        return Scope(
            kind=kind,
            name=f"{kind}:{name}",
            id=f"{kind}:{name}",
            qps=qps,
            pace=self.safety_factor,
            burst=EGRESS_BURST,
            guard_s=self.window_guard_s,
            local_guard_s=self.local_guard_s,
            aimd=aimd,
        )

    def pair_scope(self, credential: Credential, method: str) -> Scope:
        """A key × method pair: not paced (the key's own rate does that), paused for its bans,
        each ban following the last within ``pair_reset_after_s`` at least twice as long."""
        return Scope(
            kind="pair",
            name=f"pair:{credential.masked}:{method}",
            id=f"pair:{credential.app_key}:{method}",
            qps=None,
            backoff=Backoff(max_s=self.max_pair_pause_s, reset_after_s=self.pair_reset_after_s),
        )

    def egress_scope(self, egress: Egress) -> Scope:
        """An egress IP's scope: ``max_qps`` for every key on it together."""
        return Scope(
            kind="egress",
            name=f"egress:{egress.name}",
            id=f"egress:{egress.name}",
            qps=egress.max_qps,
            burst=EGRESS_BURST,
            guard_s=self.egress_window_guard_s,
            local_guard_s=self.local_guard_s,
        )

    def quarantine(self) -> Quarantine:
        """A credential's quarantine: probed after ``probe_after_s``, backing off to the max."""
        return Quarantine(
            probe_after_s=self.probe_after_s, max_probe_after_s=self.max_probe_after_s
        )
