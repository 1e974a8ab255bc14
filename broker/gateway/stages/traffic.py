"""Stage `traffic`, and the admission around `forward`: who may use how much, and when to stop
sending to an upstream that keeps failing.

`Throttle` (a stage, after approval: only calls that would be forwarded count) checks the rate
limits and charges the call budgets. `UpstreamAdmission` wraps the forward itself, because a
concurrency slot and a breaker outcome belong to the upstream round trip: the breaker of the
upstream admits the call (or refuses it fast while open), a slot of the upstream and of the
principal is held for the round trip, and the outcome is recorded — only transport failures
(timeout, closed connection) count against the upstream; an error answer is an answer.

A refusal at any step never reaches the upstream; a budget already charged is refunded when
a later step refuses. Every refusal is a `Rejection` with a reason code and `retryAfter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, ClassVar

import orjson

from broker.errors import PolicyFailure, UpstreamError
from broker.gateway.call import Call
from broker.telemetry.metrics import BrokerMetrics
from broker.traffic.breaker import BreakerBoard
from broker.traffic.cache import ResponseCache
from broker.traffic.concurrency import ConcurrencyGate
from broker.traffic.errors import CircuitOpen, TrafficRefusal
from broker.traffic.quota import QuotaBook
from broker.traffic.ratelimit import RateLimiter, RateLimitRule
from broker.traffic.settings import obligation_rule
from broker.traffic.subject import TrafficSubject

COUNTED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete"})
"""The requests traffic rules apply to (subscriptions and lists are not rate limited)."""

_PARSED_LIMIT = 1024


def subject_of(call: Call) -> TrafficSubject:
    """The call as the traffic parts see it: plain strings, never a credential. Built once per call
    (the stage, the cache and the admission all ask)."""
    subject = call.traffic_subject
    if subject is None:
        assert call.principal is not None and call.target is not None, "identity and catalog run first"
        principal = call.principal
        target = call.target
        subject = call.traffic_subject = TrafficSubject(
            principal=f"{principal.type}:{principal.id}@{principal.tenant or ''}",
            tenant=principal.tenant,
            tool=str(target.resource.get("id", target.name)),
            upstream=target.upstream,
        )
    return subject


class Throttle:
    name: ClassVar[str] = "traffic"

    def __init__(self, limiter: RateLimiter, quotas: QuotaBook, metrics: BrokerMetrics | None) -> None:
        self._limiter = limiter
        self._quotas = quotas
        self._metrics = metrics
        self._parsed: dict[str, RateLimitRule] = {}
        """Obligation (as canonical JSON) → its rule: a policy returns the same few again and again.
        Bounded: emptied when it reaches _PARSED_LIMIT entries."""

    def _policy_limits(self, call: Call) -> list[RateLimitRule]:
        """Rate limits the policy attached to this call (`rate_limit` obligations). One the broker
        cannot apply withholds the call: a limit the policy asked for is never skipped."""
        decision = call.decision
        if decision is None or not decision.obligations:
            return []
        rules: list[RateLimitRule] = []
        for raw in decision.obligations:
            if raw.get("type") != "rate_limit":
                continue
            key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()
            rule = self._parsed.get(key)
            if rule is None:
                try:
                    rule = obligation_rule(raw)
                except ValueError as exc:
                    raise PolicyFailure(
                        f"the policy asked for a rate limit the broker cannot apply ({exc}); "
                        "the call is refused"
                    ) from None
                if len(self._parsed) >= _PARSED_LIMIT:
                    self._parsed.clear()
                self._parsed[key] = rule
            rules.append(rule)
        return rules

    async def handle(self, call: Call) -> None:
        if call.method not in COUNTED_METHODS:
            return
        subject = subject_of(call)
        extra = self._policy_limits(call)
        try:
            await self._limiter.enforce(subject, extra)
            call.quota_charge = await self._quotas.charge(subject)
        except TrafficRefusal:
            if self._metrics is not None:
                self._metrics.rate_limited(subject.upstream, subject.tool)
            raise


class UpstreamAdmission:
    """Breaker, concurrency caps and response cache around one upstream round trip."""

    def __init__(
        self,
        *,
        quotas: QuotaBook,
        breakers: BreakerBoard | None,
        gate: ConcurrencyGate,
        cache: ResponseCache | None,
        metrics: BrokerMetrics | None,
    ) -> None:
        self._quotas = quotas
        self._breakers = breakers
        self._gate = gate
        self.cache = cache
        self._metrics = metrics

    def cached(self, call: Call) -> tuple[Any, dict[str, Any] | None]:
        """(cache key or None, a cached result or None) for a read-only, idempotent tool call."""
        cache = self.cache
        if cache is None or call.method != "tools/call" or call.target is None or call.principal is None:
            return None, None
        subject = subject_of(call)
        if not cache.applies(subject.tool, call.target.resource.get("annotations")):
            return None, None
        arguments = call.params.get("arguments")
        key = cache.key(subject.principal, subject.tool, arguments if isinstance(arguments, dict) else None)
        return key, cache.get(key)

    @asynccontextmanager
    async def admit(self, call: Call) -> AsyncIterator[None]:
        subject = subject_of(call)
        breaker = self._breakers.breaker(subject.upstream) if self._breakers is not None else None
        try:
            admission = breaker.admit() if breaker is not None else None
        except CircuitOpen:
            self._refused(call, subject, breaker_open=True)
            raise
        state = breaker.state if breaker is not None else None
        try:
            async with self._gate.slot(subject.upstream, subject.principal):
                try:
                    yield
                except UpstreamError:  # timeout, closed connection, no usable answer
                    self._record(breaker, admission, state, subject.upstream, success=False)
                    raise
                except asyncio.CancelledError:
                    if breaker is not None and admission is not None:
                        breaker.abandon(admission)
                    raise
                except BaseException:
                    self._record(breaker, admission, state, subject.upstream, success=True)
                    raise
                self._record(breaker, admission, state, subject.upstream, success=True)
        except TrafficRefusal:  # no slot came free: the round trip never started
            if breaker is not None and admission is not None:
                breaker.abandon(admission)
            self._refused(call, subject, breaker_open=False)
            raise

    def _refused(self, call: Call, subject: TrafficSubject, *, breaker_open: bool) -> None:
        if call.quota_charge is not None:
            self._quotas.refund(call.quota_charge)
            call.quota_charge = None
        if self._metrics is not None:
            if breaker_open:
                self._metrics.breaker_rejected(subject.upstream)
            else:
                self._metrics.rate_limited(subject.upstream, subject.tool)

    def _record(self, breaker: Any, admission: Any, before: Any, upstream: str, *, success: bool) -> None:
        if breaker is None or admission is None:
            return
        breaker.record(admission, success)
        after = breaker.state
        if self._metrics is None or after == before:
            return
        if after == "open":
            self._metrics.breaker_opened(upstream)
        elif after == "closed":
            self._metrics.breaker_closed(upstream)


class Traffic:
    """The traffic parts built from config (app.py), as the pipeline uses them."""

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        quotas: QuotaBook,
        gate: ConcurrencyGate,
        breakers: BreakerBoard | None,
        cache: ResponseCache | None,
        metrics: BrokerMetrics | None,
    ) -> None:
        self.limiter = limiter
        self.quotas = quotas
        self.gate = gate
        self.breakers = breakers
        self.cache = cache
        self.throttle = Throttle(limiter, quotas, metrics)
        self.admission = UpstreamAdmission(
            quotas=quotas, breakers=breakers, gate=gate, cache=cache, metrics=metrics
        )

    def status(self) -> dict[str, Any]:
        """For /readyz: breaker states, upstream caps in use, budget and cache counters — no
        principal names (readiness is not access-controlled)."""
        budgets = self.quotas.snapshot()
        return {
            "breakers": [asdict(b) for b in self.breakers.snapshot()] if self.breakers is not None else [],
            "concurrency": [asdict(c) for c in self.gate.snapshot() if c.name.startswith("upstream")],
            "quotas": {"tracked": len(budgets), "exhausted": sum(1 for q in budgets if q.remaining == 0)},
            "cache": asdict(self.cache.stats()) if self.cache is not None else None,
        }

    async def aclose(self) -> None:
        await self.limiter.aclose()
