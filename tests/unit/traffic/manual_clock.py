"""A clock the test moves by hand: traffic parts take `clock=` so tests never sleep for time to pass."""

from __future__ import annotations


class ManualClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
