"""Stage `decide`: the policy engine's answer for this exact call, with its arguments.

Allow lets the call go on; deny and an engine failure stop it with their own stable reason;
require-approval goes on to the approval stage, which waits for a human or stops it. The
upstream is never contacted unless the decision in force says allow (forward checks).
"""

from __future__ import annotations

from typing import Any, ClassVar

from broker.errors import ApprovalRequired, InvalidParams, PolicyDenied, PolicyFailure
from broker.gateway.call import Call
from broker.policy.decision import Decision, Effect
from broker.policy.point import PolicyPoint
from broker.policy.request import ACTION_FOR_METHOD, CallFacts, build_request

NO_DECISION_NEEDED = frozenset({"resources/unsubscribe"})
"""Stopping a subscription never needs permission."""


class Decide:
    name: ClassVar[str] = "decide"

    def __init__(self, policy: PolicyPoint) -> None:
        self._policy = policy

    async def handle(self, call: Call) -> None:
        if call.method in NO_DECISION_NEEDED:
            return
        assert call.target is not None and call.principal is not None, "identity and catalog run first"
        try:
            request, summary = build_request(
                call.principal,
                ACTION_FOR_METHOD[call.method],
                call.target.resource,
                arguments_of(call),
                CallFacts(
                    call.transport,
                    call.protocol_version,
                    call.session.id if call.session else None,
                    call.trace.trace_id,
                ),
            )
        except (TypeError, ValueError) as exc:  # not JSON a policy can judge: never evaluated, never sent
            raise InvalidParams(f"{call.method}: the arguments cannot be evaluated: {exc}") from None
        call.argument_digest = summary.digest
        call.authz_request = request
        engine = self._policy.engine
        with call.trace.decision(engine.name) as step:
            decision = await engine.decide(request)
            step.record_decision(
                effect=decision.effect.value,
                policy_version=decision.policy_version,
                policy_ids=[r.id for r in decision.reasons],
                decision_id=decision.decision_id,
                failed=decision.error is not None,
            )
        call.decision = decision
        if decision.effect is Effect.DENY:
            raise rejection(decision)
        # allow goes on; require_approval goes on to the approval stage, which waits or refuses


def arguments_of(call: Call) -> dict[str, Any] | None:
    """What policies judge as the call's arguments."""
    params = call.params
    if call.method in ("tools/call", "prompts/get"):
        args = params.get("arguments")
        return args if isinstance(args, dict) else None
    if call.method == "completion/complete":
        argument = params.get("argument")
        return {"argument": argument} if isinstance(argument, dict) else None
    return None


def rejection(decision: Decision) -> PolicyDenied | ApprovalRequired | PolicyFailure:
    data: dict[str, Any] = {
        "policies": [r.id for r in decision.reasons],
        "policy_version": decision.policy_version,
        "engine": decision.engine,
    }
    scopes = sorted({r.scope for r in decision.reasons if r.scope})
    if scopes and decision.effect is Effect.DENY:
        data["required_scope"] = " ".join(scopes)  # the caller can get a token with it (step-up)
    if decision.error is not None:
        return PolicyFailure(
            f"The policy engine could not decide, so the request is denied: {decision.error}", **data
        )
    if decision.effect is Effect.REQUIRE_APPROVAL:
        return ApprovalRequired(
            f"This request needs a human approval ({decision.reason_text()}); "
            "this broker has no approval channel configured, so it is not carried out",
            **data,
        )
    return PolicyDenied(f"Denied by policy: {decision.reason_text()}", **data)
