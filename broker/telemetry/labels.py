"""Bounded label values: a Prometheus label must never take an unbounded set of values.

Every distinct label value is a new time series, kept in memory by the broker and by
every Prometheus that scrapes it, for as long as the process lives. Tool names come
from upstreams (a server may expose thousands, or generate names), and reason codes or
methods can be influenced by callers; one careless label turns a scrape into a memory
leak on both sides. So every open-ended label goes through a `LabelCap`: the first
`limit` values are kept as they are, later ones are folded into `OTHER`.
"""

from __future__ import annotations

from collections.abc import Hashable

OTHER = "other"
"""The value every label takes once its cap is reached."""

NONE = ""
"""The value of a label that does not apply (no tool for a resource read, no server yet)."""


class LabelCap:
    """Keeps the first `limit` distinct (scope, value) pairs of one label, maps the rest to `OTHER`.

    `scope` qualifies a value: tool names are admitted per server, so `search` of two
    servers is two entries. The limit bounds the total, which is what bounds the series.
    A limit of 0 folds every value (the label is effectively switched off).
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a label cap cannot be negative: {limit}")
        self.limit = limit
        self._seen: set[tuple[Hashable, str]] = set()

    def label(self, value: str | None, scope: Hashable = None) -> str:
        if value is None or value == NONE:
            return NONE
        key = (scope, value)
        if key in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(key)
        return value

    @property
    def used(self) -> int:
        """How many distinct values have been admitted so far."""
        return len(self._seen)
