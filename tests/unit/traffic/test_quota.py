"""Budgets per period with cost weights: charge, refuse with the reset time, refund, report."""

from __future__ import annotations

import pytest

from broker.traffic.errors import QuotaExhausted
from broker.traffic.patterns import Match, NamePattern
from broker.traffic.quota import QuotaBook, QuotaRule
from broker.traffic.subject import TrafficSubject
from tests.unit.traffic.manual_clock import ManualClock

pytestmark = pytest.mark.anyio

MIDNIGHT = 86400.0 * 20_000
COSTS = ((NamePattern("github__*"), 5), (NamePattern("free__*"), 0))


def subject(tool: str, principal: str = "Agent:alice", tenant: str = "acme") -> TrafficSubject:
    return TrafficSubject(principal, tenant, tool, tool.split("__")[0])


def tenant_rule(budget: int = 10) -> QuotaRule:
    return QuotaRule("tenant-daily", Match(), ("tenant",), budget, "day", COSTS)


async def test_weighted_costs_spend_the_budget_and_refusal_says_when_it_resets() -> None:
    clock = ManualClock(MIDNIGHT + 3600 * 20)  # 20:00 UTC
    book = QuotaBook([tenant_rule()], clock)
    await book.charge(subject("github__search"))
    await book.charge(subject("github__search"))
    for _ in range(3):
        await book.charge(subject("free__ping"))  # cost 0: always passes
    with pytest.raises(QuotaExhausted) as caught:
        await book.charge(subject("time__now"))
    assert caught.value.reason == "quota_exhausted"
    assert caught.value.retry_after == pytest.approx(4 * 3600)
    assert caught.value.data["resets_at"].endswith("T00:00:00Z")
    assert caught.value.data["spent"] == 10
    clock.advance(4 * 3600)
    await book.charge(subject("time__now"))
    assert [s.remaining for s in book.snapshot()] == [9]


async def test_budgets_are_separate_per_dimension() -> None:
    book = QuotaBook([tenant_rule(1)], ManualClock(MIDNIGHT))
    await book.charge(subject("time__now", tenant="acme"))
    await book.charge(subject("time__now", tenant="globex"))
    with pytest.raises(QuotaExhausted):
        await book.charge(subject("time__now", principal="Agent:bob", tenant="acme"))


async def test_refused_call_charges_no_budget() -> None:
    per_principal = QuotaRule("principal-hourly", Match(), ("principal",), 100, "hour")
    book = QuotaBook([per_principal, tenant_rule(1)], ManualClock(MIDNIGHT))
    await book.charge(subject("time__now"))
    with pytest.raises(QuotaExhausted) as caught:
        await book.charge(subject("time__now"))
    assert caught.value.data["rule"] == "tenant-daily"
    spent = {s.rule: s.spent for s in book.snapshot()}
    assert spent == {"principal-hourly": 1, "tenant-daily": 1}


async def test_refund_gives_the_charge_back() -> None:
    book = QuotaBook([tenant_rule()], ManualClock(MIDNIGHT))
    charge = await book.charge(subject("github__search"))
    assert book.status(subject("x__y"))[0].remaining == 5
    book.refund(charge)
    assert book.status(subject("x__y"))[0].remaining == 10


async def test_only_matching_calls_are_charged() -> None:
    rule = QuotaRule("github", Match(tool=NamePattern("github__*")), ("principal",), 1, "hour")
    book = QuotaBook([rule], ManualClock(MIDNIGHT))
    for _ in range(3):
        await book.charge(subject("time__now"))
    await book.charge(subject("github__search"))
    with pytest.raises(QuotaExhausted):
        await book.charge(subject("github__search"))


async def test_a_cost_above_the_whole_budget_never_passes() -> None:
    book = QuotaBook([tenant_rule(4)], ManualClock(MIDNIGHT))
    with pytest.raises(QuotaExhausted) as caught:
        await book.charge(subject("github__search"))
    assert caught.value.retry_after is None


async def test_snapshot_drops_past_periods() -> None:
    clock = ManualClock(MIDNIGHT)
    book = QuotaBook([tenant_rule()], clock)
    await book.charge(subject("time__now"))
    assert len(book.snapshot()) == 1
    clock.advance(86400)
    assert book.snapshot() == []


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="period"):
        QuotaRule("q", Match(), (), 1, "week")
    with pytest.raises(ValueError, match="budget"):
        QuotaRule("q", Match(), (), 0, "day")
