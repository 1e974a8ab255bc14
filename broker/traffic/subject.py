"""What the traffic parts need to know about a call, and nothing more.

The gateway builds one `TrafficSubject` per call from its principal and target. Keeping it to
plain strings keeps this package independent of the identity and catalog types, and makes the
keys the rate-limit store writes (possibly to a shared Redis) obvious.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds as a float. Injected everywhere so tests move time instead of sleeping."""


@dataclass(frozen=True, slots=True)
class TrafficSubject:
    principal: str
    """A stable key of the caller: type, id and tenant, e.g. "Agent:code-review-bot@acme" (never a token).
    Rate-limit counters, budgets and cache scopes are per this key."""
    tenant: str | None
    tool: str
    """The public tool name ("github__create_issue")."""
    upstream: str

    def dimension(self, name: str) -> str:
        """The value of one `per` dimension ("principal", "tenant", "tool", "upstream")."""
        if name == "principal":
            return self.principal
        if name == "tenant":
            return self.tenant or ""
        if name == "tool":
            return self.tool
        if name == "upstream":
            return self.upstream
        raise ValueError(f"unknown dimension {name!r}")
