"""A circuit breaker per upstream: stop sending calls to an upstream that keeps failing.

```
closed ──(failure ratio > threshold over the window, at least min_calls)──▶ open
open ──(cool_down elapsed)──▶ half-open
half-open ──(half_open_calls probes all succeeded)──▶ closed
half-open ──(any probe failed)──▶ open (a new cool-down)
```

The caller reports outcomes; what counts as a failure is the caller's call: transport errors,
timeouts and a dead connection are failures; a JSON-RPC error answer or an `isError` tool result
is a success (the upstream is healthy and answered). Protocol:

    admission = breaker.admit()          # raises CircuitOpen while open
    ... forward ...
    breaker.record(admission, ok)        # or breaker.abandon(admission) if the caller cancelled

Outcomes are counted in time buckets (a tenth of the window each), so memory is constant however
many calls pass; an outcome counts for at least `window` and at most `1.1 * window` seconds.
An outcome from before the last state change (a call admitted while closed that
ends after the breaker opened) is ignored: each admission carries the generation it was admitted
in. In half-open, at most `half_open_calls` probes are in flight; other calls are refused fast.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from broker.traffic.errors import CircuitOpen
from broker.traffic.subject import Clock

State = Literal["closed", "open", "half_open"]
_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_ratio: float = 0.5
    window: float = 30.0
    min_calls: int = 10
    cool_down: float = 15.0
    half_open_calls: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.window <= 0 or self.cool_down <= 0:
            raise ValueError("window and cool_down must be > 0")
        if self.min_calls < 1 or self.half_open_calls < 1:
            raise ValueError("min_calls and half_open_calls must be >= 1")


@dataclass(frozen=True, slots=True)
class Admission:
    generation: int
    probe: bool


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What /readyz and metrics show for one upstream."""

    upstream: str
    state: State
    calls: int
    failures: int
    opened: int
    """How many times this breaker has opened since start."""
    retry_after: float
    """Seconds until the next probe may pass (0 unless open)."""


class CircuitBreaker:
    def __init__(self, upstream: str, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self.upstream = upstream
        self._policy = policy
        self._clock = clock
        self._width = policy.window / _BUCKETS
        self._buckets: deque[list[float]] = deque()
        """[bucket start, calls, failures], oldest first, within the window."""
        self._state: State = "closed"
        self._generation = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._opened = 0

    @property
    def state(self) -> State:
        self._advance(self._clock())
        return self._state

    def _advance(self, now: float) -> None:
        if self._state == "open" and now - self._opened_at >= self._policy.cool_down:
            self._state = "half_open"
            self._generation += 1
            self._probes_in_flight = 0
            self._probe_successes = 0

    def admit(self) -> Admission:
        """Let a call through or raise `CircuitOpen` with the time until the next probe."""
        now = self._clock()
        self._advance(now)
        if self._state == "closed":
            return Admission(self._generation, probe=False)
        if self._state == "half_open" and self._probes_in_flight < self._policy.half_open_calls:
            self._probes_in_flight += 1
            return Admission(self._generation, probe=True)
        retry = self._retry_after(now)
        raise CircuitOpen(
            f"upstream {self.upstream!r} is failing; calls are refused "
            + (f"for {retry:.1f} s more" if self._state == "open" else "while it is being probed"),
            retry,
            upstream=self.upstream,
            state=self._state,
        )

    def record(self, admission: Admission, success: bool) -> None:
        """Report how an admitted call ended: `success=False` for transport errors and timeouts."""
        now = self._clock()
        self._advance(now)
        if admission.generation != self._generation:
            return
        if admission.probe:
            self._probes_in_flight -= 1
            if not success:
                self._open(now)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self._policy.half_open_calls:
                    self._close()
            return
        self._count(now, success)
        calls, failures = self._totals()
        if calls >= self._policy.min_calls and failures / calls > self._policy.failure_ratio:
            self._open(now)

    def abandon(self, admission: Admission) -> None:
        """The call ended without telling anything about the upstream (e.g. the caller cancelled)."""
        if admission.probe and admission.generation == self._generation and self._state == "half_open":
            self._probes_in_flight -= 1

    def _count(self, now: float, success: bool) -> None:
        horizon = now - self._policy.window
        while self._buckets and self._buckets[0][0] + self._width <= horizon:
            self._buckets.popleft()
        if not self._buckets or now >= self._buckets[-1][0] + self._width:
            self._buckets.append([now, 0.0, 0.0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        if not success:
            bucket[2] += 1

    def _totals(self) -> tuple[int, int]:
        return int(sum(b[1] for b in self._buckets)), int(sum(b[2] for b in self._buckets))

    def _open(self, now: float) -> None:
        self._state = "open"
        self._generation += 1
        self._opened_at = now
        self._opened += 1
        self._buckets.clear()

    def _close(self) -> None:
        self._state = "closed"
        self._generation += 1
        self._buckets.clear()

    def _retry_after(self, now: float) -> float:
        if self._state == "open":
            return max(0.0, self._opened_at + self._policy.cool_down - now)
        return 1.0  # half-open with all probes in flight: about one call's time

    def snapshot(self) -> BreakerSnapshot:
        now = self._clock()
        self._advance(now)
        horizon = now - self._policy.window
        live = [b for b in self._buckets if b[0] + self._width > horizon]
        retry = self._retry_after(now) if self._state == "open" else 0.0
        return BreakerSnapshot(
            self.upstream,
            self._state,
            int(sum(b[1] for b in live)),
            int(sum(b[2] for b in live)),
            self._opened,
            retry,
        )


class BreakerBoard:
    """One breaker per upstream, made on first use; the set /readyz reports."""

    def __init__(self, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, upstream: str) -> CircuitBreaker:
        breaker = self._breakers.get(upstream)
        if breaker is None:
            breaker = self._breakers[upstream] = CircuitBreaker(upstream, self._policy, self._clock)
        return breaker

    def forget(self, upstream: str) -> None:
        """The upstream was removed from the configuration."""
        self._breakers.pop(upstream, None)

    def snapshot(self) -> list[BreakerSnapshot]:
        return [breaker.snapshot() for breaker in self._breakers.values()]
