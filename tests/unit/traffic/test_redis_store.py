"""The shared store on a real redis-server: one limit held across two stores (two replicas), fail closed."""

from __future__ import annotations

import pytest
from limits import parse

from broker.traffic.errors import RateLimited, TrafficStoreUnavailable
from broker.traffic.patterns import Match
from broker.traffic.ratelimit import RateLimiter, RateLimitRule
from broker.traffic.ratestore import LimitsRateStore, Slot, rate_store_for
from broker.traffic.subject import TrafficSubject
from tests.support.redis import RedisServer, stop_redis

pytestmark = pytest.mark.anyio

ALICE = TrafficSubject("Agent:alice", "acme", "github__search", "github")


def global_rule(limit: str) -> RateLimitRule:
    return RateLimitRule("global", Match(), (), (parse(limit),))


async def test_a_limit_holds_across_two_replicas(redis_server: RedisServer) -> None:
    replica_a = RateLimiter([global_rule("5/minute")], rate_store_for(redis_server.url))
    replica_b = RateLimiter([global_rule("5/minute")], rate_store_for(redis_server.url))
    try:
        verdicts = [await replica_a.check(ALICE) for _ in range(3)]
        verdicts += [await replica_b.check(ALICE) for _ in range(2)]
        assert all(v.allowed for v in verdicts)
        refused = await replica_a.check(ALICE)
        assert refused.rule == "global" and 0 < refused.retry_after <= 60
        with pytest.raises(RateLimited):
            await replica_b.enforce(ALICE)
    finally:
        await replica_a.aclose()
        await replica_b.aclose()


async def test_several_limits_on_redis_count_concurrently(redis_server: RedisServer) -> None:
    store = rate_store_for(redis_server.url)
    try:
        wide = Slot.of("wide|x", "wide", parse("10/minute"))
        narrow = Slot.of("narrow|x", "narrow", parse("2/minute"))
        assert await store.acquire([wide, narrow]) is None
        assert await store.acquire([wide, narrow]) is None
        refusal = await store.acquire([wide, narrow])
        assert refusal is not None and refusal.slot is narrow
        # Documented difference from memory://: the refused call was counted in "wide".
        assert await store.remaining(wide) == 7
    finally:
        await store.aclose()


async def test_redis_down_refuses_the_call(redis_server: RedisServer) -> None:
    store = LimitsRateStore("async+" + redis_server.url)
    limiter = RateLimiter([global_rule("100/minute")], store)
    try:
        assert (await limiter.check(ALICE)).allowed
        stop_redis(redis_server)
        with pytest.raises(TrafficStoreUnavailable) as caught:
            await limiter.check(ALICE)
        assert caught.value.reason == "traffic_store_unavailable"
    finally:
        await limiter.aclose()
