"""The outcome vocabulary shared by metrics and spans, from the broker's real exception tree."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker import errors
from broker.telemetry.outcome import OWN_OUTCOMES, Outcome, call_outcome


@pytest.mark.parametrize(
    ("result", "exc", "expected"),
    [
        ({"content": []}, None, Outcome("ok", False)),
        ({"content": [], "isError": False}, None, Outcome("ok", False)),
        ({"content": [], "isError": True}, None, Outcome("tool_error", False)),
        ({"content": [], "isError": "true"}, None, Outcome("ok", False)),  # not the wire's boolean
        (None, None, Outcome("ok", False)),
        (None, errors.ForwardedError({"code": -32602, "message": "bad"}), Outcome("error", True)),
        (None, errors.PolicyDenied("no"), Outcome("policy_denied", False)),
        (None, errors.ApprovalRequired("ask"), Outcome("approval_required", False)),
        (None, errors.UnknownTool("?"), Outcome("unknown_tool", False)),
        (None, errors.AuthenticationRequired("who"), Outcome("unauthenticated", False)),
        (None, errors.PolicyFailure("engine down"), Outcome("policy_error", True)),
        (None, errors.ApprovalUnavailable("store down"), Outcome("approval_error", True)),
        (None, errors.UpstreamTimeout("slow"), Outcome("upstream_timeout", True)),
        (None, errors.UpstreamClosed("gone"), Outcome("upstream_closed", True)),
        (None, asyncio.CancelledError(), Outcome("cancelled", False)),
        (None, KeyError("bug"), Outcome("internal_error", True)),
    ],
)
def test_how_a_request_ended(
    result: dict[str, Any] | None, exc: BaseException | None, expected: Outcome
) -> None:
    outcome = call_outcome(result, exc)
    assert outcome == expected
    assert outcome.outcome in OWN_OUTCOMES or isinstance(exc, errors.BrokerError)


def test_every_rejection_of_the_tree_maps_to_its_own_reason_code() -> None:
    stack: list[type[errors.BrokerError]] = [errors.Rejection]
    seen = 0
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        outcome = call_outcome(None, cls("x"))
        assert outcome.outcome == cls.reason
        assert outcome.fault is (cls.reason in {"policy_error", "approval_error"})
        seen += 1
    assert seen > 10
