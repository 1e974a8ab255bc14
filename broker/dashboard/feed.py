"""The live decisions feed: the last N routed calls, kept in memory for the dashboard.

The gateway hands every routed call to `DecisionFeed.record(call, outcome)` where the call
ends (`Gateway._observe`), on the hot path: so `record` does a constant amount of work and
no I/O — it puts a few strings and the call's immutable principal and decision into a
`FeedEntry` tuple, appends it to a bounded deque (the oldest falls out) and wakes whoever
streams the feed (only when someone does). Labels and JSON are made when a page reads them. Open streams read
what is new themselves (`wait_after`), so a slow browser never slows a call down.

An entry carries no secrets: the principal's type, id and tenant, the target's public name,
the decision's effect and reasons, the outcome and timings. Never arguments, never a token.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.identity.principal import Principal
from broker.policy.decision import Decision

if TYPE_CHECKING:
    from broker.gateway.call import Call


class FeedEntry(NamedTuple):
    """One ended call. A named tuple, not a frozen dataclass: it is built on the hot path, and
    a tuple is built in a fraction of the time (`bench` numbers in docs/dashboard.md)."""

    seq: int
    """Position in the feed (the SSE event id: a reconnecting browser resumes after it)."""
    at: float
    """When the call ended (Unix seconds)."""
    who: Principal | None
    """The caller (immutable), or None when it was not identified; shown as `principal`."""
    method: str
    server: str
    target: str
    decision: Decision | None
    """The decision (immutable), or None when none was made (not identified, unknown tool)."""
    outcome: str
    """How the call ended: ok, tool_error, a reason code (policy_denied, rate_limited …)."""
    latency_ms: float | None
    """From the request's arrival at the front to its end (None if the front did not stamp it)."""
    upstream_ms: float | None
    approval: str | None
    """The id of the approval the call waited on, if any."""

    @property
    def principal(self) -> str:
        """`type:id@tenant` (`@tenant` only with a tenant), or `-` when the caller was not identified."""
        who = self.who
        if who is None:
            return "-"
        return f"{who.type}:{who.id}@{who.tenant}" if who.tenant else f"{who.type}:{who.id}"

    @property
    def effect(self) -> str:
        return self.decision.effect.value if self.decision is not None else "none"

    def to_json(self) -> dict[str, Any]:
        reasons = self.decision.reasons if self.decision is not None else ()
        return {
            "seq": self.seq,
            "at": self.at,
            "time": time.strftime("%H:%M:%S", time.gmtime(self.at)),
            "principal": self.principal,
            "method": self.method,
            "server": self.server,
            "target": self.target,
            "effect": self.effect,
            "reasons": [{"id": r.id, "message": r.message} for r in reasons],
            "outcome": self.outcome,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "upstream_ms": None if self.upstream_ms is None else round(self.upstream_ms, 2),
            "approval": self.approval,
        }


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """What a viewer asked to see: each field a case-insensitive substring (empty: anything)."""

    principal: str = ""
    target: str = ""
    effect: str = ""
    outcome: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> FeedFilter:
        def value(name: str) -> str:
            return str(query.get(name, "")).strip()[:100].lower()

        return cls(value("principal"), value("target"), value("effect"), value("outcome"))

    def matches(self, entry: FeedEntry) -> bool:
        return (
            self.principal in entry.principal.lower()
            and self.target in entry.target.lower()
            and (not self.effect or self.effect == entry.effect)
            and self.outcome in entry.outcome.lower()
        )

    def query(self) -> dict[str, str]:
        """The non-empty fields, for the stream's URL (the same filter, server side)."""
        fields = {"principal": self.principal, "target": self.target}
        fields |= {"effect": self.effect, "outcome": self.outcome}
        return {k: v for k, v in fields.items() if v}


class DecisionFeed:
    def __init__(self, size: int, *, clock: Any = time.time) -> None:
        self._entries: deque[FeedEntry] = deque(maxlen=size)
        self._seq = 0
        self._clock = clock
        self._changed = asyncio.Event()
        self._watchers = 0
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._seq

    def record(self, call: Call, outcome: str) -> None:
        """A routed call ended (the gateway's hook). Constant work, no I/O, never raises on a
        call's shape: whatever is missing shows as `-`."""
        # No await beyond this point: the gateway calls this synchronously as the call ends.
        now = self._clock()
        target = call.target
        public = server = "-"
        if target is not None:
            public = str(target.resource.get("id", target.name))
            server = target.upstream
        arrived = call.arrived_ns
        approval = call.approval
        self._seq += 1
        self._entries.append(
            FeedEntry(
                self._seq,
                now,
                call.principal,
                call.method,
                server,
                public,
                call.decision,
                outcome,
                None if arrived is None else max(0.0, (time.time_ns() - arrived) / 1e6),
                call.upstream_ms,
                approval.id if approval is not None else None,
            )
        )
        if self._watchers:  # nobody streams: nothing to wake, no Event to make
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def entries(self, after: int = 0, only: FeedFilter | None = None) -> list[FeedEntry]:
        """Entries with seq > after, oldest first, matching the filter."""
        return [e for e in self._entries if e.seq > after and (only is None or only.matches(e))]

    def recent(self, limit: int, only: FeedFilter | None = None) -> list[FeedEntry]:
        """The newest `limit` matching entries, newest first (the page's initial table)."""
        found: list[FeedEntry] = []
        for entry in reversed(self._entries):
            if only is None or only.matches(entry):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    async def wait_after(self, seq: int, timeout: float) -> bool:
        """Until something newer than `seq` is in the feed (True), the timeout, or close (False)."""
        if self._seq > seq:
            return True
        if self.closed:
            return False
        self._watchers += 1
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._watchers -= 1
        return self._seq > seq

    def close(self) -> None:
        """The broker stops: open streams end (their browsers reconnect to the next broker)."""
        self.closed = True
        self._changed.set()

    def upstream_latencies(self, upstreams: Iterable[str]) -> dict[str, dict[str, float | int]]:
        """p50/p99 of the upstream round trips among the kept entries, per upstream."""
        samples: dict[str, list[float]] = {name: [] for name in upstreams}
        for entry in self._entries:
            if entry.upstream_ms is not None and entry.server in samples:
                samples[entry.server].append(entry.upstream_ms)
        return {name: _percentiles(values) for name, values in samples.items() if values}


def _percentiles(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.5), "p99": at(0.99), "samples": len(ordered)}
