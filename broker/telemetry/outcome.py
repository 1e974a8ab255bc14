"""How a request ended, in the one vocabulary metrics, spans and logs share.

`call_outcome(result, exc)` is called once per request where it ends (beside the audit
record) and gives the `outcome` label of `mcp_broker_calls_total` and the outcome of the
request span, plus whether it was a *fault*:

| how it ended | outcome | fault |
| --- | --- | --- |
| a result | `ok` | no |
| a result with `isError: true` (the tool reported a failure) | `tool_error` | no |
| the upstream answered a JSON-RPC error (forwarded unchanged) | `error` | yes |
| the broker refused (`Rejection`: deny, unknown tool, rate limit, ...) | its reason code | no |
| the engine could not decide, or approvals are down | `policy_error`, `approval_error` | yes |
| the upstream failed (`UpstreamError`: timeout, closed) | its reason code | yes |
| the caller went away (the request task was cancelled) | `cancelled` | no |
| anything else (a bug) | `internal_error` | yes |

A refusal is the broker doing its job, so it is not marked as an error in traces; a fault
is something an operator must look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from broker.errors import BrokerError, ForwardedError, Rejection

OWN_OUTCOMES: Final = frozenset({"ok", "tool_error", "error", "cancelled", "internal_error"})
"""The outcomes that are not a reason code of broker/errors.py."""

FAULT_REASONS: Final = frozenset({"policy_error", "approval_error"})
"""Rejections that are failures of the broker's own machinery, not decisions."""


class Outcome(NamedTuple):
    outcome: str
    fault: bool


def call_outcome(result: Mapping[str, Any] | None, exc: BaseException | None) -> Outcome:
    """The outcome of a request that returned `result` or raised `exc`."""
    if exc is None:
        if result is not None and result.get("isError") is True:
            return Outcome("tool_error", False)
        return Outcome("ok", False)
    if isinstance(exc, ForwardedError):
        return Outcome("error", True)
    if isinstance(exc, Rejection):
        return Outcome(exc.reason, exc.reason in FAULT_REASONS)
    if isinstance(exc, BrokerError):
        return Outcome(exc.reason, True)
    if isinstance(exc, asyncio.CancelledError):
        return Outcome("cancelled", False)
    return Outcome("internal_error", True)
