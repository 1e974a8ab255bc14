"""The response cache: opt-in by annotations, scoped per principal, TTL, LRU, error results skipped."""

from __future__ import annotations

from broker.traffic.cache import ResponseCache, argument_digest, cacheable
from broker.traffic.patterns import NamePattern
from tests.unit.traffic.manual_clock import ManualClock

READ_ONLY = {"readOnlyHint": True, "idempotentHint": True}
RESULT = {"content": [{"type": "text", "text": "12:00"}], "isError": False}


def test_only_read_only_and_idempotent_tools_are_cacheable() -> None:
    assert cacheable(READ_ONLY)
    assert not cacheable({"readOnlyHint": True})
    assert not cacheable({"idempotentHint": True})
    assert not cacheable({"readOnlyHint": True, "idempotentHint": "true"})
    assert not cacheable(None)
    cache = ResponseCache(10, 10, tools=(NamePattern("time__*"),))
    assert cache.applies("time__now", READ_ONLY)
    assert not cache.applies("github__search", READ_ONLY)


def test_argument_order_does_not_change_the_key() -> None:
    assert argument_digest({"a": 1, "b": [1, {"y": 2, "x": 1}]}) == argument_digest(
        {"b": [1, {"x": 1, "y": 2}], "a": 1}
    )
    assert argument_digest({"a": 1}) != argument_digest({"a": 2})
    assert argument_digest(None) == argument_digest({})


def test_never_shared_across_principals_unless_configured() -> None:
    private = ResponseCache(10, 10)
    private.put(private.key("Agent:alice", "time__now", {}), RESULT)
    assert private.get(private.key("Agent:bob", "time__now", {})) is None
    assert private.get(private.key("Agent:alice", "time__now", {})) == RESULT
    shared = ResponseCache(10, 10, shared=True)
    shared.put(shared.key("Agent:alice", "time__now", {}), RESULT)
    assert shared.get(shared.key("Agent:bob", "time__now", {})) == RESULT


def test_entries_expire_after_the_ttl() -> None:
    clock = ManualClock()
    cache = ResponseCache(10, 10, clock=clock)
    key = cache.key("p", "time__now", {})
    cache.put(key, RESULT)
    clock.advance(9.9)
    assert cache.get(key) == RESULT
    clock.advance(0.1)
    assert cache.get(key) is None
    assert cache.stats().entries == 0


def test_least_recently_used_is_evicted_first() -> None:
    cache = ResponseCache(10, 2)
    a, b, c = (cache.key("p", "t__x", {"n": n}) for n in range(3))
    cache.put(a, RESULT)
    cache.put(b, RESULT)
    assert cache.get(a) is not None  # a is now the most recent
    cache.put(c, RESULT)
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert cache.stats().evictions == 1


def test_error_results_are_not_cached_and_hits_are_copies() -> None:
    cache = ResponseCache(10, 10)
    key = cache.key("p", "t__x", {})
    assert not cache.put(key, {"content": [], "isError": True})
    assert cache.get(key) is None
    cache.put(key, RESULT)
    first = cache.get(key)
    assert first is not None
    first["content"].clear()
    assert cache.get(key) == RESULT
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 1)
