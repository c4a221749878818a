"""What the upstream's answers do to a limit: a ban's rate cut, a quarantine, an egress's pause.

- A rate limit (code 7 …) bans a scope for the ban's seconds and cuts its rate (AIMD): by
  ``decrease`` once per ban, to no less than ``min_factor``; the rate then climbs back by
  ``recovery_per_s`` of the full rate each second (:class:`Aimd`).
- A ban of a scope with a back-off (a key × method pair) pauses at least twice as long as the
  last one when it follows it within ``reset_after_s`` (:class:`Backoff`).
- An invalid credential (codes 25/27/29 …) is quarantined; after ``probe_after_s`` (doubling up
  to ``max_probe_after_s``) it is let out for one probe call at a time, half-open style
  (:class:`Quarantine`).
- An egress that no connection gets through pauses after ``limit`` failures in a row, doubling
  its pause each time (:class:`Reachability`).

The units keep state only; time comes in as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Aimd", "Backoff", "Quarantine", "Reachability"]


@dataclass(slots=True, eq=False, kw_only=True)
class Aimd:
    """A rate's factor (``1.0``: the full rate) after bans: cut on a ban, climbing back."""

    decrease: float
    min_factor: float
    recovery_per_s: float
    current: float = 1.0
    decreased_at: float = 0.0
    at_decrease: float = 1.0
    banned_at: float = -math.inf

    def factor(self, now: float) -> float:
        """The factor at ``now``: what the last cut has climbed back to."""
        if self.current >= 1.0:
            return 1.0
        climbed = self.at_decrease + self.recovery_per_s * (now - self.decreased_at)
        self.current = min(1.0, climbed)
        return self.current

    def on_ban(self, now: float, granted_at: float) -> None:
        """Cut the rate for a ban seen at ``now`` by a call granted at ``granted_at``.

        Calls already on the wire when the ban began come back limited too; they do not cut
        the rate again.
        """
        if granted_at < self.banned_at:
            return
        self.current = self.at_decrease = max(self.min_factor, self.factor(now) * self.decrease)
        self.decreased_at = now
        self.banned_at = now


@dataclass(slots=True, eq=False, kw_only=True)
class Backoff:
    """A ban's pause, growing while bans follow each other: the platform's ``N`` seconds at
    first, then at least twice the last pause, up to ``max_s``; a ban more than
    ``reset_after_s`` after the last pause ended starts again from ``N``."""

    max_s: float
    reset_after_s: float
    last_s: float = 0.0
    ends_at: float = -math.inf
    banned_at: float = -math.inf

    def on_ban(self, now: float, granted_at: float, retry_after: float) -> float:
        """The pause for a ban seen at ``now`` by a call granted at ``granted_at``.

        Calls already on the wire when the ban began come back limited too; they do not grow
        the pause again.
        """
        if granted_at < self.banned_at:
            return max(retry_after, self.ends_at - now)
        if now > self.ends_at + self.reset_after_s:
            self.last_s = 0.0
        self.last_s = max(retry_after, min(self.max_s, 2 * self.last_s))  # never under the ban
        self.banned_at = now
        self.ends_at = now + self.last_s
        return self.last_s


@dataclass(slots=True, eq=False, kw_only=True)
class Quarantine:
    """An invalid credential's quarantine and its half-open probes."""

    probe_after_s: float
    max_probe_after_s: float
    active: bool = False
    #: the one probe call is under way
    probing: bool = False
    probe_at: float = 0.0
    #: the wait before the next probe: doubles with each failed probe
    wait_s: float = 0.0

    def usable(self, now: float) -> bool:
        """Whether a call may go: not quarantined, or its probe is due and none is under way."""
        return not (self.active and (self.probing or now < self.probe_at))

    def begin(self, now: float) -> None:
        """Quarantine (again, after a failed probe): probe after a wait twice the last one."""
        self.wait_s = min(self.max_probe_after_s, max(self.probe_after_s, self.wait_s * 2))
        self.active = True
        self.probing = False
        self.probe_at = now + self.wait_s

    def retry_now(self, now: float) -> None:
        """A new secret deserves a new try: the probe is due at once (unless under way)."""
        if self.active and not self.probing:
            self.probe_at = min(self.probe_at, now)

    def end(self) -> None:
        """A probe went through: the credential is well again."""
        self.active = self.probing = False
        self.wait_s = 0.0


@dataclass(slots=True, eq=False)
class Reachability:
    """Transport failures of an egress in a row, and the pause they earn it."""

    failures: int = 0
    #: the last pause; the next one doubles it
    pause_s: float = 0.0
    #: every failure, for tools
    unreachable: int = 0

    def failed(self) -> None:
        self.unreachable += 1
        self.failures += 1

    def reached(self) -> None:
        """A call got through: the run of failures and the pause's doubling end."""
        self.failures = 0
        self.pause_s = 0.0

    def next_pause(self, first_s: float, max_s: float) -> float:
        """The pause this run of failures earns: ``first_s``, then doubling up to ``max_s``."""
        self.pause_s = min(max_s, max(first_s, self.pause_s * 2))
        return self.pause_s
