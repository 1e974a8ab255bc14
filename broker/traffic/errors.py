"""The refusals of the traffic stage: one class per reason, each with a retry-after hint.

```
TrafficRefusal                 the call is refused before it reaches the upstream
├── RateLimited                rate_limited          a rate-limit rule is full
├── QuotaExhausted             quota_exhausted       a budget is spent until the period resets
├── ConcurrencyLimited         concurrency_limited   no slot within the bounded wait
├── CircuitOpen                upstream_circuit_open the upstream's breaker is open
└── TrafficStoreUnavailable    traffic_store_unavailable  the shared counter store failed
```

Each is a `Rejection` of broker/errors.py (JSON-RPC -32000, the reason in `error.data.reason`,
`retry_after` in `error.data.retryAfter`), so the gateway answers and audits it like any other
refusal. `retry_after` is in seconds, never negative; `None` means "not
before the configuration changes" (a cost larger than a whole budget).
"""

from __future__ import annotations

from typing import Any

from broker.errors import SERVER_ERROR, Rejection


class TrafficRefusal(Rejection):
    """The traffic stage refused the call; it never reached the upstream."""

    code = SERVER_ERROR
    reason = "traffic_refused"

    def __init__(self, message: str, retry_after: float | None = None, **data: Any) -> None:
        super().__init__(message, **data)
        self.retry_after = None if retry_after is None else max(0.0, retry_after)

    def to_error(self) -> dict[str, Any]:
        error = super().to_error()
        if self.retry_after is not None:
            error["data"]["retryAfter"] = round(self.retry_after, 3)
        return error


class RateLimited(TrafficRefusal):
    """A rate-limit rule has no room; `data` names the rule and the limit."""

    reason = "rate_limited"


class QuotaExhausted(TrafficRefusal):
    """A call budget is spent; `retry_after` is the time until the period resets."""

    reason = "quota_exhausted"


class ConcurrencyLimited(TrafficRefusal):
    """No concurrency slot came free within the bounded wait (or the wait queue was full)."""

    reason = "concurrency_limited"


class CircuitOpen(TrafficRefusal):
    """The upstream's circuit breaker is open; `retry_after` is the time until the next probe."""

    reason = "upstream_circuit_open"


class TrafficStoreUnavailable(TrafficRefusal):
    """The rate-limit store (e.g. Redis) failed: the call is refused, never waved through."""

    reason = "traffic_store_unavailable"

    def __init__(self, message: str, retry_after: float | None = 1.0, **data: Any) -> None:
        super().__init__(message, retry_after, **data)
