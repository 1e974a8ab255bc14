"""Call budgets over a calendar period, with per-tool cost weights.

A quota rule covers the calls its `match` accepts and keeps one budget per combination of its
`per` dimensions (per tenant, per principal, ...; an empty `per` is one shared budget). Periods are
UTC calendar hours or days: a budget resets at the top of the hour or at midnight UTC, the same
moment for everyone, so "when does it reset" has one answer a person can check. A call costs the
weight of the first `costs` pattern that matches its tool (in configuration order), else 1; a
weight of 0 makes a tool free.

A call is charged only if every matching budget can pay for it; otherwise nothing is charged and
`QuotaExhausted` names the budget and the time until it resets. `refund` gives a charge back when
a later stage refuses the call before it reaches the upstream.

Budgets live in memory (one machine). The counting is synchronous with no await between test and
charge, so concurrent calls cannot overdraw a budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from broker.traffic.errors import QuotaExhausted
from broker.traffic.patterns import Match, NamePattern
from broker.traffic.ratelimit import DIMENSIONS
from broker.traffic.subject import Clock, TrafficSubject

PERIODS = {"hour": 3600, "day": 86400}
_PRUNE_EVERY = 4096


@dataclass(frozen=True, slots=True)
class QuotaRule:
    name: str
    match: Match
    per: tuple[str, ...]
    budget: int
    period: str
    costs: tuple[tuple[NamePattern, int], ...] = ()

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"quota {self.name!r}: period must be one of {', '.join(PERIODS)}")
        if self.budget < 1:
            raise ValueError(f"quota {self.name!r}: budget must be a positive integer")
        for dimension in self.per:
            if dimension not in DIMENSIONS:
                raise ValueError(f"quota {self.name!r}: unknown per dimension {dimension!r}")
        for pattern, cost in self.costs:
            if cost < 0:
                raise ValueError(f"quota {self.name!r}: cost of {pattern.text!r} must be >= 0")

    @property
    def seconds(self) -> int:
        return PERIODS[self.period]

    def cost(self, tool: str) -> int:
        for pattern, cost in self.costs:
            if pattern.matches(tool):
                return cost
        return 1

    def key(self, subject: TrafficSubject) -> str:
        return "|".join(subject.dimension(d) for d in self.per)


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """One budget as metrics and the admin API show it."""

    rule: str
    key: str
    budget: int
    spent: int
    resets_at: float

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent)


@dataclass(frozen=True, slots=True)
class QuotaCharge:
    """What one call paid, so a later refusal can give it back."""

    items: tuple[tuple[str, str, int, int], ...] = ()
    """(rule, key, period index, cost) for each budget charged."""


class QuotaBook:
    """All budgets of this process. Budgets of past periods are dropped when next touched or read."""

    def __init__(self, rules: Sequence[QuotaRule], clock: Clock = time.time) -> None:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError("quota rule names must be unique")
        self._rules = tuple(rules)
        self._clock = clock
        self._spent: dict[tuple[str, str], tuple[int, int]] = {}
        """(rule, key) → (period index, spent in that period)."""
        self._by_name = {rule.name: rule for rule in self._rules}
        self._since_prune = 0

    def _spent_now(self, rule: QuotaRule, key: str, index: int) -> int:
        entry = self._spent.get((rule.name, key))
        return entry[1] if entry is not None and entry[0] == index else 0

    async def charge(self, subject: TrafficSubject) -> QuotaCharge:
        """Charge every matching budget, or none and raise `QuotaExhausted` for the first short one."""
        now = self._clock()
        # No await beyond this point: test all budgets, then charge all.
        planned: list[tuple[str, str, int, int, int]] = []
        for rule in self._rules:
            if not rule.match.accepts(subject.principal, subject.tenant, subject.tool):
                continue
            cost = rule.cost(subject.tool)
            if cost == 0:
                continue
            key = rule.key(subject)
            index = int(now // rule.seconds)
            spent = self._spent_now(rule, key, index)
            if spent + cost > rule.budget:
                resets_at = (index + 1) * rule.seconds
                retry = None if cost > rule.budget else resets_at - now
                raise QuotaExhausted(
                    f"quota {rule.name!r} spent ({spent} of {rule.budget} per {rule.period}, "
                    f"this call costs {cost}); it resets at {_utc(resets_at)}",
                    retry,
                    rule=rule.name,
                    budget=rule.budget,
                    spent=spent,
                    cost=cost,
                    resets_at=_utc(resets_at),
                )
            planned.append((rule.name, key, index, spent + cost, cost))
        for name, key, index, spent, _ in planned:
            self._spent[(name, key)] = (index, spent)
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._prune(now)
        return QuotaCharge(tuple((name, key, index, cost) for name, key, index, _, cost in planned))

    def refund(self, charge: QuotaCharge) -> None:
        """Give back a charge (the call never reached the upstream). A past period is not refunded."""
        for name, key, index, cost in charge.items:
            entry = self._spent.get((name, key))
            if entry is not None and entry[0] == index:
                self._spent[(name, key)] = (index, max(0, entry[1] - cost))

    def status(self, subject: TrafficSubject) -> list[QuotaStatus]:
        """The budgets this caller's call would be charged to (for an error body or a UI)."""
        now = self._clock()
        return [
            self._status(rule, rule.key(subject), now)
            for rule in self._rules
            if rule.match.accepts(subject.principal, subject.tenant, subject.tool)
        ]

    def snapshot(self) -> list[QuotaStatus]:
        """Every budget touched in its current period (metrics: remaining per rule and key)."""
        now = self._clock()
        self._prune(now)
        return [self._status(self._by_name[name], key, now) for name, key in self._spent]

    def _prune(self, now: float) -> None:
        """Drop budgets of past periods: memory stays bounded by the callers active this period."""
        self._since_prune = 0
        rules = self._by_name
        stale = [k for k, (index, _) in self._spent.items() if index != int(now // rules[k[0]].seconds)]
        for k in stale:
            del self._spent[k]

    def _status(self, rule: QuotaRule, key: str, now: float) -> QuotaStatus:
        index = int(now // rule.seconds)
        return QuotaStatus(
            rule.name, key, rule.budget, self._spent_now(rule, key, index), (index + 1) * rule.seconds
        )


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
