"""The in-memory sliding-window counter: admission, fading of the previous window, retry-after."""

from __future__ import annotations

import math
import random

import pytest
from limits import parse

from broker.traffic import ratestore
from broker.traffic.ratestore import MemoryRateStore, Slot, rate_store_for, sliding_retry_after
from tests.unit.traffic.manual_clock import ManualClock

pytestmark = pytest.mark.anyio

WINDOW_START = 60.0 * 20_000


def slot(text: str = "3/minute", key: str = "k") -> Slot:
    return Slot.of(key, "rule", parse(text))


async def test_admits_up_to_the_amount_in_one_window_then_refuses() -> None:
    clock = ManualClock(WINDOW_START)
    store = MemoryRateStore(clock)
    for _ in range(3):
        assert await store.acquire([slot()]) is None
        clock.advance(1)
    refusal = await store.acquire([slot()])
    assert refusal is not None and refusal.slot.key == "k"
    assert await store.remaining(slot()) == 0


async def test_previous_window_fades_linearly() -> None:
    clock = ManualClock(WINDOW_START)
    store = MemoryRateStore(clock)
    for _ in range(3):
        assert await store.acquire([slot()]) is None
    clock.advance(60 + 30)  # halfway into the next window: floor(3 * 0.5) = 1 counted
    assert await store.remaining(slot()) == 2
    assert await store.acquire([slot()]) is None
    assert await store.acquire([slot()]) is None
    assert await store.acquire([slot()]) is not None
    clock.advance(120)  # both windows gone
    assert await store.remaining(slot()) == 3


async def test_waiting_the_retry_after_is_enough_and_needed() -> None:
    clock = ManualClock(WINDOW_START + 10)
    store = MemoryRateStore(clock)
    for _ in range(3):
        assert await store.acquire([slot()]) is None
    refusal = await store.acquire([slot()])
    assert refusal is not None
    # 3 calls 10 s into the window: the next window must run until floor(3 * w) <= 2 (just past its start).
    assert refusal.retry_after == pytest.approx(50.001)
    clock.advance(refusal.retry_after - 0.01)
    assert await store.acquire([slot()]) is not None
    clock.advance(0.01)
    assert await store.acquire([slot()]) is None


def _load(amount: int, period: float, at: float, previous: int, current: int) -> int:
    """Load at `at` seconds after the current window's start (may be in the next window)."""
    if at < period:
        return math.floor(previous * (1 - at / period)) + current
    return math.floor(current * (1 - (at - period) / period))


def test_retry_after_is_the_first_admitting_instant_for_random_states() -> None:
    rng = random.Random(9)
    for _ in range(2000):
        amount = rng.randint(1, 20)
        period = float(rng.choice([1, 60, 3600]))
        into = rng.uniform(0, period * 0.999)
        previous = rng.randint(0, 2 * amount)
        current = rng.randint(0, amount)
        wait = sliding_retry_after(amount, period, into, previous, current)
        assert _load(amount, period, into + wait, previous, current) + 1 <= amount
        if wait > 0.002:
            assert _load(amount, period, into + wait - 0.002, previous, current) + 1 > amount


async def test_all_slots_are_tested_before_any_is_counted() -> None:
    clock = ManualClock(WINDOW_START)
    store = MemoryRateStore(clock)
    wide, narrow = slot("10/minute", "wide"), slot("1/minute", "narrow")
    assert await store.acquire([wide, narrow]) is None
    refusal = await store.acquire([wide, narrow])
    assert refusal is not None and refusal.slot is narrow
    assert await store.remaining(wide) == 9  # the refused call was not counted in "wide"


async def test_idle_counters_are_swept() -> None:
    clock = ManualClock(WINDOW_START)
    store = MemoryRateStore(clock)
    for i in range(1000):
        await store.acquire([slot("5/second", f"caller-{i}")])
    assert len(store) == 1000
    clock.advance(3)
    for _ in range(ratestore._SWEEP_EVERY):
        await store.acquire([slot("5/second", "busy")])
        clock.advance(0.25)
    assert len(store) == 1


def test_store_for_uri() -> None:
    assert isinstance(rate_store_for("memory://"), MemoryRateStore)
    with pytest.raises(ValueError, match="unsupported storage"):
        rate_store_for("memcached://127.0.0.1:1")
