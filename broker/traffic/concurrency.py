"""Concurrency caps with a bounded wait: per upstream and per principal.

A `BoundedSlots` is a counting semaphore that never queues without bound: at most `max_waiters`
callers wait, each at most `max_wait` seconds; past either the caller is refused at once with
`ConcurrencyLimited`. Waiters are served first come, first served, and a released slot is handed
directly to the oldest waiter, so a newcomer cannot overtake the queue.

Cancellation safety: a waiter that is cancelled or times out after a slot was already handed to it
passes that slot on (to the next waiter, or back to the pool); one that had not been served just
leaves the queue. A slot therefore never leaks, whatever is cancelled when.

`ConcurrencyGate.slot(upstream, principal)` takes the principal's slot first, then the upstream's
(a caller over its own cap never holds an upstream slot others could use), both within one wait
budget, and gives both back on exit. Per-principal semaphores exist only while in use.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from broker.traffic.errors import ConcurrencyLimited


class BoundedSlots:
    def __init__(self, name: str, limit: int, max_waiters: int) -> None:
        if limit < 1:
            raise ValueError(f"{name}: limit must be >= 1")
        if max_waiters < 0:
            raise ValueError(f"{name}: max_waiters must be >= 0")
        self.name = name
        self.limit = limit
        self.max_waiters = max_waiters
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def idle(self) -> bool:
        return self._free == self.limit and not self._waiters

    async def acquire(self, timeout: float) -> None:
        """Take a slot, waiting at most `timeout` seconds; raise `ConcurrencyLimited` otherwise."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        if len(self._waiters) >= self.max_waiters or timeout <= 0:
            raise ConcurrencyLimited(
                f"{self.name}: {self.limit} calls in flight and {len(self._waiters)} waiting",
                timeout if timeout > 0 else 1.0,
                cap=self.name,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # served just as we gave up: pass the slot on
            else:
                waiter.cancel()
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ConcurrencyLimited(
                    f"{self.name}: no slot free within {timeout:.3g} s", timeout, cap=self.name
                ) from None
            raise

    def release(self) -> None:
        """Give a slot back: straight to the oldest live waiter, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
        if self._free > self.limit:
            raise RuntimeError(f"{self.name}: released more slots than were taken")


@dataclass(frozen=True, slots=True)
class ConcurrencySnapshot:
    name: str
    limit: int
    in_use: int
    waiting: int


class ConcurrencyGate:
    """Caps per upstream and per principal around the forward; no cap when a limit is None."""

    def __init__(
        self,
        per_upstream: int | None,
        per_principal: int | None,
        max_waiters: int,
        max_wait: float,
    ) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self._per_upstream = per_upstream
        self._per_principal = per_principal
        self._max_waiters = max_waiters
        self._max_wait = max_wait
        self._upstreams: dict[str, BoundedSlots] = {}
        self._principals: dict[str, BoundedSlots] = {}

    def _slots(self, table: dict[str, BoundedSlots], kind: str, key: str, limit: int) -> BoundedSlots:
        slots = table.get(key)
        if slots is None:
            slots = table[key] = BoundedSlots(f"{kind} {key!r}", limit, self._max_waiters)
        return slots

    @asynccontextmanager
    async def slot(self, upstream: str, principal: str) -> AsyncIterator[None]:
        """Hold one slot of the principal and one of the upstream for the body of the `async with`."""
        deadline = time.monotonic() + self._max_wait
        held: list[tuple[dict[str, BoundedSlots], str, BoundedSlots]] = []
        wanted: list[tuple[dict[str, BoundedSlots], str, str, int | None]] = [
            (self._principals, "principal", principal, self._per_principal),
            (self._upstreams, "upstream", upstream, self._per_upstream),
        ]
        try:
            for table, kind, key, limit in wanted:
                if limit is None:
                    continue
                slots = self._slots(table, kind, key, limit)
                try:
                    await slots.acquire(deadline - time.monotonic())
                except BaseException:
                    self._forget_if_idle(table, key, slots)
                    raise
                held.append((table, key, slots))
            yield
        finally:
            for table, key, slots in reversed(held):
                slots.release()
                self._forget_if_idle(table, key, slots)

    def _forget_if_idle(self, table: dict[str, BoundedSlots], key: str, slots: BoundedSlots) -> None:
        """Drop an idle principal's semaphore (principals come and go; upstreams are few and stay)."""
        if table is self._principals and slots.idle and table.get(key) is slots:
            del table[key]

    def snapshot(self) -> list[ConcurrencySnapshot]:
        """Caps in use right now (metrics: in flight and waiting per upstream and principal)."""
        return [
            ConcurrencySnapshot(s.name, s.limit, s.in_use, s.waiting)
            for table in (self._upstreams, self._principals)
            for s in table.values()
        ]
