"""Rate limits: rules matched against each call, counted in a `RateLimitStore`.

A rule names the calls it covers (`match`: principal, tenant and/or tool patterns), what it
counts separately (`per`: a counter for each principal, tenant, tool, upstream or combination;
an empty `per` is one counter shared by every matching call) and one or more limits ("60/minute",
"1000/hour"). A call is admitted only if every limit of every matching rule has room; otherwise it
is refused with the first full limit (in configuration order) and the time until it has room.
The window semantics are in ratestore.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from limits import RateLimitItem

from broker.traffic.errors import RateLimited
from broker.traffic.patterns import Match
from broker.traffic.ratestore import RateLimitStore, Slot
from broker.traffic.subject import TrafficSubject

DIMENSIONS = ("principal", "tenant", "tool", "upstream")
_SLOT_CACHE = 65536


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    name: str
    match: Match
    per: tuple[str, ...]
    limits: tuple[RateLimitItem, ...]
    _templates: tuple[Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.limits:
            raise ValueError(f"rate limit {self.name!r}: needs at least one limit")
        for dimension in self.per:
            if dimension not in DIMENSIONS:
                raise ValueError(f"rate limit {self.name!r}: unknown per dimension {dimension!r}")

        templates = tuple(
            Slot.of(f"{self.name}@{x.amount}/{x.get_expiry()}|", self.name, x) for x in self.limits
        )
        object.__setattr__(self, "_templates", templates)

    def slots(self, subject: TrafficSubject) -> list[Slot]:
        """The counters this call is counted in, one per limit. Keys carry the limit, so a changed
        limit starts fresh counters instead of reading old ones with a different meaning."""
        per = self.per
        if not per:
            values = ""
        elif len(per) == 1:
            values = getattr(subject, per[0]) or ""
        else:
            values = "|".join([getattr(subject, d) or "" for d in per])
        return [Slot(t.key + values, t.rule, t.limit, t.amount, t.period) for t in self._templates]


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """Admitted (`rule is None`), or refused by `rule`'s `limit` with a retry-after in seconds."""

    rule: str | None = None
    limit: str | None = None
    retry_after: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.rule is None


ADMITTED = RateVerdict()


class RateLimiter:
    """Evaluates a call against all matching rules; one store call per call."""

    def __init__(self, rules: Sequence[RateLimitRule], store: RateLimitStore) -> None:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError("rate limit rule names must be unique")
        self._rules = tuple(rules)
        self._store = store
        self._slots: dict[TrafficSubject, list[Slot]] = {}
        """subject → its slots: the same caller calls the same tool again and again, and building
        keys is most of a check's cost. Bounded: emptied when it reaches _SLOT_CACHE entries."""

    @property
    def rules(self) -> tuple[RateLimitRule, ...]:
        return self._rules

    def slots(self, subject: TrafficSubject) -> list[Slot]:
        slots = self._slots.get(subject)
        if slots is None:
            slots = []
            for rule in self._rules:
                if rule.match.accepts(subject.principal, subject.tenant, subject.tool):
                    slots.extend(rule.slots(subject))
            if len(self._slots) >= _SLOT_CACHE:
                self._slots.clear()
            self._slots[subject] = slots
        return slots

    async def check(self, subject: TrafficSubject, extra: Sequence[RateLimitRule] = ()) -> RateVerdict:
        """Count the call if every matching limit has room; else say which one is full. `extra`:
        rules the policy attached to this very call (obligations): they apply without matching."""
        slots = self.slots(subject)
        if extra:
            slots = [*slots, *(slot for rule in extra for slot in rule.slots(subject))]
        if not slots:
            return ADMITTED
        refusal = await self._store.acquire(slots)
        if refusal is None:
            return ADMITTED
        limit = refusal.slot.limit
        text = f"{limit.amount}/{limit.get_expiry()}s"
        return RateVerdict(refusal.slot.rule, text, refusal.retry_after)

    async def enforce(self, subject: TrafficSubject, extra: Sequence[RateLimitRule] = ()) -> None:
        """`check`, raising `RateLimited` for a refusal (what the gateway stage calls)."""
        verdict = await self.check(subject, extra)
        if verdict.rule is not None:
            wait = verdict.retry_after
            raise RateLimited(
                f"rate limit {verdict.rule!r} ({verdict.limit}) reached; retry in {wait:.1f} s",
                verdict.retry_after,
                rule=verdict.rule,
                limit=verdict.limit,
            )

    async def aclose(self) -> None:
        await self._store.aclose()
