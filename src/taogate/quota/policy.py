"""How the pool paces and protects credentials, and the scopes it builds from that.

:class:`PoolPolicy` holds the knobs (the safety factor, bursts, window guards, AIMD, probes,
egress pauses) and builds each limit scope a call consumes from: :meth:`PoolPolicy.key_scope`
for an app key, :meth:`PoolPolicy.egress_scope` for an egress IP. A new kind of limit (an
account, an API method) gets its builder here and its place in a member's scopes.
"""

from __future__ import annotations

from dataclasses import dataclass

from taogate._credentials import Credential, Egress
from taogate.quota.health import Aimd, Quarantine
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

    def __post_init__(self) -> None:
        if not 0 < self.safety_factor <= 1:
            raise ValueError("safety_factor must be in (0, 1]")
        if not 0 < self.aimd_min_factor <= 1 or not 0 < self.aimd_decrease < 1:
            raise ValueError("AIMD factors must be in (0, 1)")

    def key_scope(self, credential: Credential) -> Scope:
        """An app key's scope: ``qps × safety_factor``, its bursts, its rate cut after bans."""
        return Scope(
            name=f"key:{credential.masked}",
            qps=credential.qps,
            pace=self.safety_factor,
            burst=self.burst,
            guard_s=self.window_guard_s,
            local_guard_s=self.local_guard_s,
            aimd=Aimd(
                decrease=self.aimd_decrease,
                min_factor=self.aimd_min_factor,
                recovery_per_s=self.recovery_per_s,
            ),
        )

    def egress_scope(self, egress: Egress) -> Scope:
        """An egress IP's scope: ``max_qps`` for every key on it together."""
        return Scope(
            name=f"egress:{egress.name}",
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
