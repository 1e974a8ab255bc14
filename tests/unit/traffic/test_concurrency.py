"""Concurrency caps: bounded waiters, bounded wait, FIFO, and no slot leaked by cancellation."""

from __future__ import annotations

import asyncio
import random

import pytest

from broker.traffic.concurrency import BoundedSlots, ConcurrencyGate
from broker.traffic.errors import ConcurrencyLimited

pytestmark = pytest.mark.anyio


async def test_full_wait_queue_refuses_at_once() -> None:
    slots = BoundedSlots("upstream 'u'", 1, max_waiters=1)
    await slots.acquire(1.0)
    waiter = asyncio.create_task(slots.acquire(5.0))
    await asyncio.sleep(0)
    assert slots.waiting == 1
    with pytest.raises(ConcurrencyLimited) as caught:
        await slots.acquire(5.0)
    assert caught.value.reason == "concurrency_limited" and caught.value.retry_after is not None
    slots.release()
    await waiter
    assert slots.in_use == 1 and slots.waiting == 0
    slots.release()
    assert slots.idle


async def test_wait_is_bounded_in_time() -> None:
    slots = BoundedSlots("principal 'a'", 1, max_waiters=10)
    await slots.acquire(1.0)
    with pytest.raises(ConcurrencyLimited, match="within"):
        await slots.acquire(0.02)
    assert slots.waiting == 0
    slots.release()
    assert slots.idle


async def test_zero_wait_never_queues() -> None:
    slots = BoundedSlots("u", 1, max_waiters=10)
    await slots.acquire(0)
    with pytest.raises(ConcurrencyLimited):
        await slots.acquire(0)
    assert slots.waiting == 0


async def test_waiters_are_served_in_arrival_order() -> None:
    slots = BoundedSlots("u", 1, max_waiters=10)
    await slots.acquire(1.0)
    served: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire(5.0)
        served.append(i)
        slots.release()

    tasks = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert served == [0, 1, 2, 3, 4]
    assert slots.idle


async def test_cancelled_waiter_leaves_the_queue() -> None:
    slots = BoundedSlots("u", 1, max_waiters=10)
    await slots.acquire(1.0)
    waiter = asyncio.create_task(slots.acquire(5.0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0
    slots.release()
    assert slots.idle


async def test_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    slots = BoundedSlots("u", 1, max_waiters=10)
    await slots.acquire(1.0)
    first = asyncio.create_task(slots.acquire(5.0))
    second = asyncio.create_task(slots.acquire(5.0))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first`, which has not run yet...
    first.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot went on to the next waiter
    assert slots.in_use == 1
    slots.release()
    assert slots.idle


async def test_random_cancellations_never_leak_or_exceed_the_cap() -> None:
    slots = BoundedSlots("u", 3, max_waiters=100)
    rng = random.Random(7)
    inside = 0
    peak = 0

    async def call() -> None:
        nonlocal inside, peak
        await slots.acquire(5.0)
        try:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(rng.choice([0, 0, 0.001]))
        finally:
            inside -= 1
            slots.release()

    tasks = [asyncio.create_task(call()) for _ in range(60)]
    for _ in range(30):
        await asyncio.sleep(0)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3
    assert slots.idle


async def test_gate_caps_principal_and_upstream_and_forgets_idle_principals() -> None:
    gate = ConcurrencyGate(per_upstream=2, per_principal=1, max_waiters=0, max_wait=0)
    async with gate.slot("github", "Agent:alice"):
        with pytest.raises(ConcurrencyLimited, match="principal 'Agent:alice'"):
            async with gate.slot("github", "Agent:alice"):
                pass
        async with gate.slot("github", "Agent:bob"):
            with pytest.raises(ConcurrencyLimited, match="upstream 'github'"):
                async with gate.slot("github", "Agent:carol"):
                    pass
            in_use = {s.name: s.in_use for s in gate.snapshot()}
            assert in_use == {
                "upstream 'github'": 2,
                "principal 'Agent:alice'": 1,
                "principal 'Agent:bob'": 1,
            }
    assert [s.name for s in gate.snapshot()] == ["upstream 'github'"]
    assert gate.snapshot()[0].in_use == 0


async def test_gate_releases_on_error_in_the_body() -> None:
    gate = ConcurrencyGate(per_upstream=1, per_principal=1, max_waiters=0, max_wait=0)
    with pytest.raises(RuntimeError):
        async with gate.slot("u", "p"):
            raise RuntimeError("upstream failed")
    async with gate.slot("u", "p"):
        pass


async def test_gate_without_caps_admits_everything() -> None:
    gate = ConcurrencyGate(per_upstream=None, per_principal=None, max_waiters=0, max_wait=0)
    async with gate.slot("u", "p"), gate.slot("u", "p"):
        assert gate.snapshot() == []
