"""The circuit breaker's state machine, driven by a manual clock."""

from __future__ import annotations

import pytest

from broker.traffic.breaker import BreakerBoard, BreakerPolicy, CircuitBreaker
from broker.traffic.errors import CircuitOpen
from tests.unit.traffic.manual_clock import ManualClock

POLICY = BreakerPolicy(failure_ratio=0.5, window=30, min_calls=10, cool_down=15, half_open_calls=2)


def calls(breaker: CircuitBreaker, outcomes: str) -> None:
    """Run one admitted call per character: "f" fails, "s" succeeds."""
    for outcome in outcomes:
        breaker.record(breaker.admit(), outcome == "s")


def open_breaker(clock: ManualClock) -> CircuitBreaker:
    breaker = CircuitBreaker("github", POLICY, clock)
    calls(breaker, "f" * 10)
    assert breaker.state == "open"
    return breaker


def test_stays_closed_below_min_calls_and_at_the_threshold() -> None:
    breaker = CircuitBreaker("github", POLICY, ManualClock())
    calls(breaker, "f" * 9)
    assert breaker.state == "closed"  # 9 failures of 9, but fewer than min_calls

    breaker = CircuitBreaker("github", POLICY, ManualClock())
    calls(breaker, "s" * 10 + "f" * 10)  # 10 failures of 20: 0.5 is not above the threshold
    assert breaker.state == "closed"
    calls(breaker, "f")  # 11 of 21
    assert breaker.state == "open"


def test_open_refuses_fast_with_the_time_to_the_next_probe() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock)
    clock.advance(5)
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.reason == "upstream_circuit_open"
    assert caught.value.retry_after == pytest.approx(10)
    assert caught.value.data == {"upstream": "github", "state": "open"}


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("github", POLICY, clock)
    calls(breaker, "f" * 9)
    clock.advance(30 + 3)  # a window plus one bucket (a tenth of it): surely forgotten
    calls(breaker, "f" + "s" * 9)
    assert breaker.state == "closed"
    assert breaker.snapshot().failures == 1


def test_half_open_probes_then_closes_on_success() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock)
    clock.advance(15)
    assert breaker.state == "half_open"
    probes = [breaker.admit(), breaker.admit()]
    assert all(p.probe for p in probes)
    with pytest.raises(CircuitOpen):
        breaker.admit()  # only two probes at a time
    breaker.record(probes[0], True)
    assert breaker.state == "half_open"
    breaker.record(probes[1], True)
    assert breaker.state == "closed"
    assert not breaker.admit().probe


def test_a_failed_probe_opens_again_with_a_new_cool_down() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock)
    clock.advance(15)
    probe = breaker.admit()
    clock.advance(2)
    breaker.record(probe, False)
    snap = breaker.snapshot()
    assert (snap.state, snap.opened, snap.retry_after) == ("open", 2, pytest.approx(15))


def test_outcomes_from_before_a_state_change_are_ignored() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("github", POLICY, clock)
    late = breaker.admit()  # admitted while closed...
    calls(breaker, "f" * 10)
    clock.advance(15)
    probe = breaker.admit()
    breaker.record(late, False)  # ...fails after the breaker opened and went half-open
    assert breaker.state == "half_open"
    breaker.record(probe, True)
    breaker.record(breaker.admit(), True)
    assert breaker.state == "closed"


def test_an_abandoned_probe_frees_its_place() -> None:
    clock = ManualClock()
    breaker = open_breaker(clock)
    clock.advance(15)
    first, second = breaker.admit(), breaker.admit()
    breaker.abandon(first)
    third = breaker.admit()
    for probe in (second, third):
        breaker.record(probe, True)
    assert breaker.state == "closed"


def test_board_keeps_one_breaker_per_upstream() -> None:
    clock = ManualClock()
    board = BreakerBoard(POLICY, clock)
    calls(board.breaker("github"), "f" * 10)
    board.breaker("time").admit()
    states = {s.upstream: s.state for s in board.snapshot()}
    assert states == {"github": "open", "time": "closed"}
    board.forget("github")
    assert [s.upstream for s in board.snapshot()] == ["time"]


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="failure_ratio"):
        BreakerPolicy(failure_ratio=0)
    with pytest.raises(ValueError, match="min_calls"):
        BreakerPolicy(min_calls=0)
