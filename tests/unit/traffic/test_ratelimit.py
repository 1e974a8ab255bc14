"""Rules: which calls they match, what they count separately, which rule refuses."""

from __future__ import annotations

import pytest
from limits import parse

from broker.traffic import ratelimit
from broker.traffic.errors import RateLimited
from broker.traffic.patterns import Match, NamePattern
from broker.traffic.ratelimit import RateLimiter, RateLimitRule
from broker.traffic.ratestore import MemoryRateStore
from broker.traffic.subject import TrafficSubject
from tests.unit.traffic.manual_clock import ManualClock

pytestmark = pytest.mark.anyio


def subject(
    principal: str = "Agent:alice", tool: str = "github__search", tenant: str | None = "acme"
) -> TrafficSubject:
    return TrafficSubject(principal, tenant, tool, tool.split("__")[0])


def rule(name: str, limits: str, per: tuple[str, ...] = (), tool: str | None = None) -> RateLimitRule:
    match = Match(tool=NamePattern(tool)) if tool else Match()
    return RateLimitRule(name, match, per, tuple(parse(t) for t in limits.split(";")))


def limiter(*rules: RateLimitRule) -> RateLimiter:
    return RateLimiter(rules, MemoryRateStore(ManualClock(60.0 * 20_000)))


async def test_per_principal_counts_each_caller_separately() -> None:
    rl = limiter(rule("per-caller", "2/minute", ("principal",)))
    for _ in range(2):
        assert (await rl.check(subject("Agent:alice"))).allowed
    assert not (await rl.check(subject("Agent:alice"))).allowed
    assert (await rl.check(subject("Agent:bob"))).allowed


async def test_tool_pattern_limits_only_matching_tools() -> None:
    rl = limiter(rule("github", "1/minute", ("principal",), tool="github__*"))
    assert (await rl.check(subject(tool="github__search"))).allowed
    verdict = await rl.check(subject(tool="github__create_issue"))
    assert (verdict.rule, verdict.limit) == ("github", "1/60s")
    assert verdict.retry_after > 0
    for _ in range(5):
        assert (await rl.check(subject(tool="time__now"))).allowed


async def test_combination_principal_and_tool() -> None:
    rl = limiter(rule("pair", "1/minute", ("principal", "tool")))
    assert (await rl.check(subject(tool="a__x"))).allowed
    assert (await rl.check(subject(tool="a__y"))).allowed
    assert (await rl.check(subject("Agent:bob", tool="a__x"))).allowed
    assert not (await rl.check(subject(tool="a__x"))).allowed


async def test_first_full_rule_refuses_and_others_are_not_charged() -> None:
    rl = limiter(rule("caller", "2/minute", ("principal",)), rule("tenant", "3/minute", ("tenant",)))
    assert (await rl.check(subject("Agent:alice"))).allowed
    assert (await rl.check(subject("Agent:alice"))).allowed
    assert (await rl.check(subject("Agent:alice"))).rule == "caller"
    assert (await rl.check(subject("Agent:bob"))).allowed  # tenant at 3: alice's refusal cost nothing
    assert (await rl.check(subject("Agent:bob"))).rule == "tenant"


async def test_several_limits_in_one_rule() -> None:
    rl = limiter(rule("burst", "2/second;3/minute", ("principal",)))
    clock = ManualClock()
    rl = RateLimiter(rl.rules, MemoryRateStore(clock))
    clock.now = 60.0 * 20_000
    assert (await rl.check(subject())).allowed
    assert (await rl.check(subject())).allowed
    assert (await rl.check(subject())).limit == "2/1s"
    clock.advance(2.5)
    assert (await rl.check(subject())).allowed
    assert (await rl.check(subject())).limit == "3/60s"


async def test_enforce_raises_rate_limited_with_rule_and_retry_after() -> None:
    rl = limiter(rule("caller", "1/minute", ("principal",)))
    await rl.enforce(subject())
    with pytest.raises(RateLimited) as caught:
        await rl.enforce(subject())
    assert caught.value.reason == "rate_limited"
    assert caught.value.data == {"rule": "caller", "limit": "1/60s"}
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 120
    assert "caller" in caught.value.message


async def test_no_matching_rule_admits_without_touching_the_store() -> None:
    store = MemoryRateStore(ManualClock())
    rl = RateLimiter([rule("github", "1/minute", tool="github__*")], store)
    assert (await rl.check(subject(tool="time__now"))).allowed
    assert len(store) == 0


def test_rule_names_must_be_unique_and_dimensions_known() -> None:
    with pytest.raises(ValueError, match="unique"):
        RateLimiter([rule("a", "1/minute"), rule("a", "2/minute")], MemoryRateStore())
    with pytest.raises(ValueError, match="per dimension"):
        rule("a", "1/minute", ("session",))


async def test_slot_cache_is_bounded_and_keeps_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_SLOT_CACHE", 2)
    rl = limiter(rule("caller", "1/minute", ("principal",)))
    callers = [subject(f"Agent:{n}") for n in range(5)]
    for caller in callers:
        assert (await rl.check(caller)).allowed
    assert len(rl._slots) <= 2
    for caller in callers:
        assert not (await rl.check(caller)).allowed
