"""Stage `approval`: a call the policy says needs a human waits here until one decides.

Allowed calls pass untouched. For a require-approval decision the call gets (or, for an
identical retry, finds) its approval, then:

- if a policy explicitly allows the caller to approve its own call (`self_approve`) and
  the caller's client can answer elicitations, the caller is asked — a server-to-client
  `elicitation/create` in the 2025-11-25 era, an `InputRequiredResult` round with a
  signed `requestState` in the 2026-07-28 era (gateway/continuations.py binds it to the
  call's digest);
- otherwise it waits for an approver (API, CLI, dashboard), with progress notifications
  when the caller gave a progress token, until the approval's deadline.

Granted, the call is decided again with `context.approval` filled in and goes on only if
that decision is allow (the policy may have changed meanwhile). Denied, expired, cancelled
or disconnected: the call ends with an error saying which. Any failure of the approval
machinery ends the call too: it never reaches the upstream unapproved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, ClassVar

import orjson

from broker.approval.approvals import Approvals, PendingCall
from broker.approval.model import Approval, ApprovalStatus
from broker.approval.store import ApprovalStoreError
from broker.errors import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    Rejection,
)
from broker.gateway.call import Call
from broker.gateway.stages.decide import rejection
from broker.policy.decision import Effect
from broker.upstream.connection import UpstreamRpcError

PROGRESS_INTERVAL_SECONDS = 10.0

APPROVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approve": {
            "type": "boolean",
            "title": "Approve this call",
            "description": "Yes runs the call exactly as shown; no refuses it.",
        },
        "note": {"type": "string", "title": "Note (optional)", "maxLength": 500},
    },
    "required": ["approve"],
}


class Approve:
    name: ClassVar[str] = "approval"

    def __init__(
        self, approvals: Approvals | None, progress_interval: float = PROGRESS_INTERVAL_SECONDS
    ) -> None:
        self._approvals = approvals
        self._progress_interval = progress_interval

    async def handle(self, call: Call) -> None:
        decision = call.decision
        if decision is None or decision.effect is not Effect.REQUIRE_APPROVAL:
            return
        if self._approvals is None:
            raise rejection(decision)
        try:
            await self._approve(call, self._approvals)
        except ApprovalStoreError as exc:
            raise ApprovalUnavailable(
                f"This request needs a human approval, and approvals cannot be recorded right now ({exc}); "
                "it is not carried out"
            ) from None

    async def _approve(self, call: Call, approvals: Approvals) -> None:
        decision = call.decision
        assert decision is not None and call.principal is not None and call.target is not None
        assert call.authz_request is not None, "the decide stage keeps the request"
        approval = await approvals.open_for(
            PendingCall(
                principal=call.principal,
                method=call.method,
                server=call.target.upstream,
                target=str(call.target.resource.get("id", call.target.name)),
                argument_digest=call.argument_digest or "",
                arguments=call.authz_request["context"].get("arguments") or {},
                request=call.authz_request,
                decision=decision,
                session=call.session.id if call.session else None,
            )
        )
        call.approval = approval
        if approval.status is ApprovalStatus.PENDING:
            with call.trace.approval_wait(approval.id) as step:
                if await self._caller_may_decide(call, approvals, approval):
                    approval = await self._ask_caller(call, approvals, approval)
                else:
                    approval = await self._wait_for_approver(call, approvals, approval)
                step.outcome(approval.status.value)
            call.approval = approval
        if approval.status is not ApprovalStatus.APPROVED:
            raise ended(approval)
        if not await approvals.consume(approval):
            raise ApprovalDenied(
                f"Approval {approval.id} was already used or is no longer valid; send the call again "
                "to ask for a new one",
                approval_id=approval.id,
            )
        rechecked = await approvals.recheck(call.authz_request, approval)
        call.decision = rechecked
        if rechecked.effect is not Effect.ALLOW:
            raise rejection(rechecked)

    async def _caller_may_decide(self, call: Call, approvals: Approvals, approval: Approval) -> bool:
        """Only where a policy explicitly allows self-approval, and the client can be asked."""
        if "elicitation" not in call.client_capabilities:
            return False
        assert call.principal is not None
        return (await approvals.may_decide(approval, call.principal)).effect is Effect.ALLOW

    async def _ask_caller(self, call: Call, approvals: Approvals, approval: Approval) -> Approval:
        assert call.principal is not None
        reasons = "; ".join(r.get("message") or r["id"] for r in approval.reasons)
        params = {
            "mode": "form",
            "message": (
                f"Approval needed ({reasons}).\nCall: {approval.target}\nArguments: "
                f"{_shown(approval.arguments)}\nApproval id: {approval.id}"
            ),
            "requestedSchema": APPROVE_SCHEMA,
        }
        remaining = max(0.0, approval.expires_at - time.time())
        try:
            answer = await asyncio.wait_for(call.relay.request("elicitation/create", params), remaining)
        except TimeoutError:
            return await approvals.expire(approval)
        except asyncio.CancelledError:
            await _shielded(approvals.cancel(approval, "the caller cancelled the request"))
            raise
        except UpstreamRpcError as exc:
            await approvals.cancel(approval, f"the caller's client could not answer: {exc}")
            return await _current(approvals, approval)
        action = answer.get("action")
        raw = answer.get("content")
        content: dict[str, Any] = raw if isinstance(raw, dict) else {}
        note = content.get("note")
        note = note if isinstance(note, str) else ""
        if action == "accept" and isinstance(content.get("approve"), bool):
            return await approvals.decide(
                approval.id, call.principal, approve=content["approve"], note=note, channel="elicitation"
            )
        if action == "decline":
            return await approvals.decide(
                approval.id,
                call.principal,
                approve=False,
                note="declined by the caller",
                channel="elicitation",
            )
        await approvals.cancel(approval, "the caller cancelled the approval question")
        return await _current(approvals, approval)

    async def _wait_for_approver(self, call: Call, approvals: Approvals, approval: Approval) -> Approval:
        progress = asyncio.create_task(self._report_progress(call, approval))
        waiting = asyncio.ensure_future(approvals.wait(approval))
        gone = asyncio.ensure_future(call.disconnected.wait()) if call.disconnected is not None else None
        try:
            await asyncio.wait({waiting} | ({gone} if gone else set()), return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            waiting.cancel()
            await _shielded(approvals.cancel(approval, "the caller disconnected"))
            return await _current(approvals, approval)
        except asyncio.CancelledError:
            waiting.cancel()
            if not approvals.others_waiting(approval):
                await _shielded(approvals.cancel(approval, "the caller cancelled the request"))
            raise
        finally:
            progress.cancel()
            if gone is not None:
                gone.cancel()

    async def _report_progress(self, call: Call, approval: Approval) -> None:
        token = call.progress_token
        if token is None:
            return
        started = time.monotonic()
        while True:
            left = max(0, int(approval.expires_at - time.time()))
            call.relay.notify(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {
                        "progressToken": token,
                        "progress": round(time.monotonic() - started, 1),
                        "message": f"waiting for a human approval ({approval.id}, {left} s left)",
                    },
                }
            )
            await asyncio.sleep(self._progress_interval)


def ended(approval: Approval) -> Rejection:
    """The error a call gets when its approval did not end in a grant."""
    data: dict[str, Any] = {"approval_id": approval.id}
    if approval.approver:
        data["approver"] = approval.approver.get("id")
    note = f": {approval.note}" if approval.note else ""
    if approval.status is ApprovalStatus.DENIED:
        who = data.get("approver", "an approver")
        return ApprovalDenied(f"Approval {approval.id} was denied by {who}{note}", **data)
    if approval.status is ApprovalStatus.EXPIRED:
        return ApprovalExpired(
            f"Approval {approval.id}: nobody decided before it expired; the call was not carried out", **data
        )
    if approval.status is ApprovalStatus.CANCELLED:
        return ApprovalCancelled(f"Approval {approval.id} was cancelled{note}", **data)
    return ApprovalCancelled(
        f"Approval {approval.id} is still pending, but the broker is restarting; send the same call "
        "again to keep waiting for it (the approval is kept)",
        **data,
    )


async def _current(approvals: Approvals, approval: Approval) -> Approval:
    current = await approvals.get(approval.id)
    return current if current is not None else approval


async def _shielded(work: Any) -> None:
    """Finish recording a cancellation even though the call's own task is being cancelled."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(work)


def _shown(arguments: dict[str, Any]) -> str:
    text = orjson.dumps(arguments).decode()
    return text if len(text) <= 2000 else text[:2000] + "…"
