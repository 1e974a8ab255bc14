"""Where rate-limit counters live: in this process, or in a store shared by all replicas.

Both stores implement the same sliding-window counter (the `limits` library's
"sliding-window-counter"): time is cut into windows of the limit's period; a window's count is the
calls it admitted; at a moment `r` seconds into the current window the load is
`floor(previous * (1 - r / period)) + current`, and a call is admitted when load + 1 ≤ amount.
So a burst can never exceed the amount within any one window, and the previous window's calls
fade out linearly instead of all at once at a boundary.

- `MemoryRateStore` (`memory://`, the default) is hand-written: the `limits` in-memory storage
  costs 11-46 µs per check for 1-5 rules against 2-5 µs here (bench/traffic.py; docs/traffic.md),
  it reads `time.time()` directly (no injected clock) and it checks each limit on its own. Here all
  limits of a call are tested first and counted only if every one admits: no await happens between
  the test and the count, so the check is atomic for the whole call.
- `LimitsRateStore` (`redis://`, `rediss://`, or any `async+…` URI of the `limits` library) uses
  `limits`' storage and its Lua scripts, atomic per counter in Redis. Limits of one call are counted
  concurrently, one round trip each; a call refused by one limit may have been counted by another
  (never more calls pass than any limit allows; a refused call can cost a unit elsewhere).

A store failure is never an admission: it raises `TrafficStoreUnavailable` (fail closed).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from broker.traffic.errors import TrafficStoreUnavailable
from broker.traffic.subject import Clock

_SWEEP_EVERY = 4096
"""Acquisitions between two sweeps of idle counters in memory (bounds memory by active keys)."""


_STEP = 0.001
"""Added to a wait that ends strictly after an instant (see `sliding_retry_after`)."""


class Slot(NamedTuple):
    """One counter a call must fit in: a limit of a rule, for one combination of `per` values.

    A named tuple, not a dataclass: several are built per call and tuple construction is the
    cheapest; `amount` and `period` are copied out of the `limits` item once per rule, at load.
    """

    key: str
    rule: str
    limit: RateLimitItem
    amount: int
    period: int

    @classmethod
    def of(cls, key: str, rule: str, limit: RateLimitItem) -> Slot:
        return cls(key, rule, limit, int(limit.amount), int(limit.get_expiry()))


@dataclass(frozen=True, slots=True)
class SlotRefusal:
    slot: Slot
    retry_after: float


class RateLimitStore(Protocol):
    """Counts calls against slots; admits all of them or names the first one that is full."""

    async def acquire(self, slots: Sequence[Slot]) -> SlotRefusal | None: ...

    async def remaining(self, slot: Slot) -> int: ...

    async def aclose(self) -> None: ...


def sliding_retry_after(amount: int, period: float, into: float, previous: int, current: int) -> float:
    """Seconds until `floor(previous * weight) + current + 1 <= amount` holds, if no other call comes.

    `into` is how far (seconds) the current window has run. Within the current window the
    previous window's weight falls linearly; if even weight 0 leaves no room, the next window
    starts with `current` as its previous count and the same reasoning applies there. Where the
    condition turns true only strictly after an instant, a millisecond is added, so a caller that
    waits exactly the answer is admitted.
    """
    room = amount - 1 - current
    if room >= 0:
        if previous <= room:
            return 0.0
        # previous * (1 - (into + t) / period) < room + 1
        wait = period * (1.0 - (room + 1) / previous) - into + _STEP
        if wait < period - into:
            return max(0.0, wait)
    rest = period - into
    room_next = amount - 1
    if current <= room_next:
        return rest
    return rest + period * (1.0 - (room_next + 1) / current) + _STEP


class MemoryRateStore:
    """The sliding-window counter in this process: exact, atomic per call, microseconds per check."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, int, int, int]] = {}
        """key → (window index `current` belongs to, previous count, current count, period)."""
        self._since_sweep = 0

    def _counts(self, slot: Slot, now: float) -> tuple[int, float, int, int]:
        period = slot.period
        index = int(now // period)
        entry = self._windows.get(slot.key)
        if entry is None or entry[0] < index - 1:
            previous, current = 0, 0
        elif entry[0] == index - 1:
            previous, current = entry[2], 0
        else:
            previous, current = entry[1], entry[2]
        return index, now - index * period, previous, current

    async def acquire(self, slots: Sequence[Slot]) -> SlotRefusal | None:
        now = self._clock()
        windows = self._windows
        # No await beyond this point: test every slot, then count in all of them.
        admitted: list[tuple[str, tuple[int, int, int, int]]] = []
        for slot in slots:
            period = slot.period
            index = int(now // period)
            entry = windows.get(slot.key)
            if entry is None or entry[0] < index - 1:
                previous, current = 0, 0
            elif entry[0] == index - 1:
                previous, current = entry[2], 0
            else:
                previous, current = entry[1], entry[2]
            into = now - index * period
            if int(previous * (1.0 - into / period)) + current >= slot.amount:
                wait = sliding_retry_after(slot.amount, period, into, previous, current)
                return SlotRefusal(slot, wait)
            admitted.append((slot.key, (index, previous, current + 1, period)))
        for key, entry in admitted:
            windows[key] = entry
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._sweep(now)
        return None

    async def remaining(self, slot: Slot) -> int:
        _, into, previous, current = self._counts(slot, self._clock())
        return max(0, slot.amount - math.floor(previous * (1.0 - into / slot.period)) - current)

    def _sweep(self, now: float) -> None:
        """Forget counters that no window can see any more (both their windows have passed)."""
        self._since_sweep = 0
        idle = [key for key, (index, _, _, period) in self._windows.items() if index < now // period - 1]
        for key in idle:
            del self._windows[key]

    async def aclose(self) -> None:
        self._windows.clear()

    def __len__(self) -> int:
        return len(self._windows)


class LimitsRateStore:
    """The same sliding-window counter in a `limits` storage: Redis shares counters across replicas."""

    def __init__(self, uri: str, key_prefix: str = "mcp-broker") -> None:
        options: dict[str, str | float | bool] = {"wrap_exceptions": True}
        remote = uri.startswith(("async+redis", "async+rediss"))
        if remote:
            options.update(implementation="redispy", key_prefix=key_prefix)
        self._concurrent = remote
        """Round trips overlap (gather) only over a network; in memory a task per hit costs ~100 us."""
        storage = storage_from_string(uri, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"storage {uri!r} is not an async storage of the limits library")
        self._storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def acquire(self, slots: Sequence[Slot]) -> SlotRefusal | None:
        try:
            if self._concurrent and len(slots) > 1:
                hits = await asyncio.gather(*(self._limiter.hit(s.limit, s.key) for s in slots))
            else:
                hits = [await self._limiter.hit(s.limit, s.key) for s in slots]
            for slot, hit in zip(slots, hits, strict=True):
                if not hit:
                    stats = await self._limiter.get_window_stats(slot.limit, slot.key)
                    return SlotRefusal(slot, max(0.0, stats.reset_time - time.time()))
        except Exception as exc:  # any storage failure refuses the call (fail closed)
            raise TrafficStoreUnavailable(f"rate-limit store unavailable: {type(exc).__name__}") from exc
        return None

    async def remaining(self, slot: Slot) -> int:
        try:
            stats = await self._limiter.get_window_stats(slot.limit, slot.key)
        except Exception as exc:
            raise TrafficStoreUnavailable(f"rate-limit store unavailable: {type(exc).__name__}") from exc
        return int(stats.remaining)

    async def aclose(self) -> None:
        close = getattr(getattr(getattr(self._storage, "bridge", None), "storage", None), "aclose", None)
        if close is not None:
            await close()


def rate_store_for(uri: str, clock: Clock = time.time) -> RateLimitStore:
    """The store a `traffic.storage` URI names: `memory://`, `redis://…`, `rediss://…`, `async+…://`."""
    if uri == "memory://":
        return MemoryRateStore(clock)
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        return LimitsRateStore("async+" + uri)
    if uri.startswith("async+"):
        return LimitsRateStore(uri)
    raise ValueError(f"unsupported storage {uri!r}: use memory:// or redis://host:port/db")
