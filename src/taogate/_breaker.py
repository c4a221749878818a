"""A circuit breaker per provider, a retry budget, and jittered back-off.

The breaker keeps the outcomes of the last ``window`` calls. It opens when at least
``min_calls`` are recorded and the failure ratio or the slow-call ratio reaches its threshold;
after ``open_s`` it lets ``half_open_probes`` calls through; their success closes it, any
failure opens it again. Only transient upstream faults count as failures: a rate limit or a bad
id says nothing about the upstream's health.

The retry budget keeps retries a small share of calls (Finagle's RetryBudget): every first call
deposits ``ratio`` of a retry, every retry withdraws one, and a floor of ``min_per_s`` retries
per second keeps a quiet service able to retry at all. Every timer reads an injected clock.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "RetryBudget",
    "backoff",
]

Clock = Callable[[], float]
log = logging.getLogger("taogate.breaker")


class BreakerState(StrEnum):
    """Closed lets calls through, open refuses them, half-open lets a few probes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When the breaker opens and how it recovers."""

    window: int = 50
    min_calls: int = 10
    failure_ratio: float = 0.5
    slow_call_s: float = 2.0
    slow_ratio: float = 0.8
    open_s: float = 5.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("need 1 <= min_calls <= window")
        if not (0 < self.failure_ratio <= 1 and 0 < self.slow_ratio <= 1):
            raise ValueError("ratios must be in (0, 1]")
        if self.open_s <= 0 or self.half_open_probes < 1:
            raise ValueError("open_s must be positive and half_open_probes at least 1")


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """The breaker at one moment: its state and how often it has opened."""

    state: BreakerState
    opened: int


class CircuitBreaker:
    """The breaker of one provider. Call :meth:`allow` before a call, :meth:`record` after."""

    def __init__(self, policy: BreakerPolicy | None = None, *, clock: Clock) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._outcomes: deque[tuple[bool, bool]] = deque()  # (failed, slow)
        self._failures = 0
        self._slow = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probes_out = 0
        self._probes_ok = 0
        self._generation = 0
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker turns half-open once ``open_s`` has passed)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.policy.open_s
        ):
            self._state = BreakerState.HALF_OPEN
            self._probes_out = 0
            self._probes_ok = 0
            self._generation += 1
        return self._state

    def stats(self) -> BreakerStats:
        """The state now and the times the breaker opened."""
        return BreakerStats(state=self.state, opened=self.opened_count)

    @property
    def generation(self) -> int:
        """Changes at every change of state; a call records with the one it was let out in."""
        _ = self.state
        return self._generation

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.policy.open_s - self._clock())

    def permits(self) -> bool:
        """Whether :meth:`allow` would let a call through now (nothing is taken)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        return self._probes_out + self._probes_ok < self.policy.half_open_probes

    def allow(self) -> bool:
        """Whether a call may go now; in half-open each allowed call is a probe to record."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes_out + self._probes_ok >= self.policy.half_open_probes:
            return False
        self._probes_out += 1
        return True

    def record(self, *, failed: bool, duration_s: float, generation: int | None = None) -> None:
        """The outcome of a call that :meth:`allow` let through.

        With ``generation`` (read when the call was let out), an outcome from an earlier state
        is ignored: a call sent before the breaker opened is no probe of the half-open state.
        """
        slow = duration_s >= self.policy.slow_call_s
        state = self.state
        if generation is not None and generation != self._generation:
            return
        if state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            if failed or slow:
                self._open()
            else:
                self._probes_ok += 1
                if self._probes_ok >= self.policy.half_open_probes:
                    self._close()
            return
        if state is BreakerState.OPEN:
            return  # a call let through before the breaker opened; it no longer counts
        self._push(failed, slow)
        n = len(self._outcomes)
        if n >= self.policy.min_calls and (
            self._failures >= self.policy.failure_ratio * n
            or self._slow >= self.policy.slow_ratio * n
        ):
            self._open()

    def release(self, generation: int | None = None) -> None:
        """A call that :meth:`allow` let through ended without an outcome (it was cancelled)."""
        if self._state is BreakerState.HALF_OPEN and generation in (None, self._generation):
            self._probes_out = max(0, self._probes_out - 1)

    def _push(self, failed: bool, slow: bool) -> None:
        self._outcomes.append((failed, slow))
        self._failures += failed
        self._slow += slow
        if len(self._outcomes) > self.policy.window:
            old_failed, old_slow = self._outcomes.popleft()
            self._failures -= old_failed
            self._slow -= old_slow

    def _open(self) -> None:
        log.warning(
            "the upstream is failing: circuit breaker open for %gs "
            "(%d failed and %d slow of the last %d calls)",
            self.policy.open_s,
            self._failures,
            self._slow,
            len(self._outcomes),
        )
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._generation += 1
        self.opened_count += 1

    def _close(self) -> None:
        log.warning("the upstream answers again: circuit breaker closed")
        self._state = BreakerState.CLOSED
        self._generation += 1
        self._outcomes.clear()
        self._failures = 0
        self._slow = 0


class RetryBudget:
    """Retries allowed as ``ratio`` of calls over the last ``ttl_s``, plus a per-second floor."""

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        min_per_s: float = 1.0,
        ttl_s: float = 10.0,
        clock: Clock,
        buckets: int = 10,
    ) -> None:
        if ratio < 0 or min_per_s < 0 or ttl_s <= 0 or buckets < 1:
            raise ValueError("invalid retry budget")
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.ttl_s = ttl_s
        self._clock = clock
        self._width = ttl_s / buckets
        self._buckets = buckets
        # bucket index -> [deposits, withdrawals]; only the last ``buckets`` indexes count
        self._counts: dict[int, list[int]] = {}

    def _current(self) -> list[int]:
        index = int(self._clock() // self._width)
        for old in [i for i in self._counts if i <= index - self._buckets]:
            del self._counts[old]
        return self._counts.setdefault(index, [0, 0])

    def deposit(self) -> None:
        """Count a first call."""
        self._current()[0] += 1

    def try_withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        current = self._current()
        deposits = sum(c[0] for c in self._counts.values())
        withdrawals = sum(c[1] for c in self._counts.values())
        if withdrawals + 1 > self.ratio * deposits + self.min_per_s * self.ttl_s:
            return False
        current[1] += 1
        return True


def backoff(
    attempt: int, *, base_s: float = 0.05, cap_s: float = 2.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential back-off before retry number ``attempt`` (from 1)."""
    ceiling = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0.0, ceiling)
