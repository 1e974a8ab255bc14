"""The approval desk: files approval requests, lets authorised people decide them, wakes the calls.

Every rule that makes approvals trustworthy is enforced here, whichever channel a
decision comes through (the caller's client, the API, the CLI, the dashboard):

- who may decide is a policy decision: action `approve` with the approver as principal
  and the pending call as resource and context; when the approver is the requester (or
  the user an agent acts for, or an agent acting for the requester) the action is
  `self_approve`, which no `approve` permit covers — separation of duties unless a
  policy explicitly allows self-approval;
- a decision is a compare-and-set on a pending approval before its deadline: two
  approvers, or an approver and the expiry, have exactly one winner;
- a grant is used at most once (unless the gate said `@approval_reuse`), only by the same
  principal for the same target and argument digest, and only within its validity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker.approval.model import Approval, ApprovalStatus, identity_key, new_approval_id
from broker.approval.store import ApprovalStore, ApprovalStoreError
from broker.approval.webhook import ApprovalWebhook
from broker.identity.principal import Principal
from broker.policy.decision import Decision, Effect
from broker.policy.point import PolicyPoint

log = logging.getLogger("broker.approvals")

EventHook = Callable[[str, Approval], Awaitable[None]]
"""Told about every step (`requested`, `approved`, `denied`, `expired`, `cancelled`, `used`)."""


class ApprovalRefused(Exception):
    """A decision that cannot be made: unknown id (404), not allowed (403), already decided (409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    timeout: float = 300.0
    """Seconds a pending approval waits for a decision (and the call with it)."""
    grant_ttl: float = 600.0
    """Seconds after the decision during which the caller's identical call may use a grant."""
    poll_interval: float = 1.0
    """How often a waiting call re-reads the store (decisions made by another broker replica)."""


@dataclass(frozen=True, slots=True)
class PendingCall:
    """What an approval is requested for (built by the approval stage from the call)."""

    principal: Principal
    method: str
    server: str
    target: str
    argument_digest: str
    arguments: dict[str, Any]
    request: dict[str, Any]
    decision: Decision
    session: str | None


def is_self(requester: dict[str, Any], approver: Principal) -> bool:
    """Whether the approver is the requester, the human behind it, or an agent of the same human."""
    if requester.get("type") == approver.type and requester.get("id") == approver.id:
        return True
    if approver.type == "User" and requester.get("acting_for") == approver.id:
        return True
    if approver.acting_for is not None and approver.acting_for == requester.get("acting_for"):
        return True  # two agents of the same person
    return requester.get("type") == "User" and approver.acting_for == requester.get("id")


def reuse_window(decision: Decision) -> float:
    """A grant covers identical calls for a while only if every gate asking for it says so (min)."""
    windows = [r.approval_reuse for r in decision.reasons]
    return min(windows) if windows and all(w > 0 for w in windows) else 0.0


class Approvals:
    def __init__(
        self,
        store: ApprovalStore,
        policy: PolicyPoint,
        settings: ApprovalSettings,
        *,
        webhook: ApprovalWebhook | None = None,
        approve_hint: str = "",
        on_event: EventHook | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._policy = policy
        self._webhook = webhook
        self._approve_hint = approve_hint
        self.on_event = on_event
        self._wakeups: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.shutting_down = False
        """Set when the broker stops: waiting calls end, their approvals stay pending (a retry uses them)."""

    async def start(self) -> None:
        await self._store.open()
        self._sweeper = asyncio.create_task(self._sweep(), name="approvals-expiry")

    def prepare_shutdown(self) -> None:
        """The broker is stopping: waiting calls end now, telling their callers to retry."""
        self.shutting_down = True
        for wakeup in self._wakeups.values():
            wakeup.set()

    async def close(self) -> None:
        self.shutting_down = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._webhook is not None:
            await self._webhook.close()
        await self._store.close()

    # -- the caller's side -----------------------------------------------------------------------

    async def open_for(self, pending: PendingCall) -> Approval:
        """The approval this call waits on or uses: an identical call's, else a new pending one."""
        now = time.time()
        key = identity_key(pending.principal)
        existing = await self._store.for_retry(key, pending.target, pending.argument_digest, now)
        if existing is not None:
            log.info("approval %s: %s called %s again; reusing it", existing.id, key, pending.target)
            return existing
        approval = Approval(
            id=new_approval_id(),
            status=ApprovalStatus.PENDING,
            requester=pending.principal.document,
            requester_key=key,
            method=pending.method,
            server=pending.server,
            target=pending.target,
            argument_digest=pending.argument_digest,
            arguments=pending.arguments,
            reasons=[r.to_json() for r in pending.decision.reasons],
            policy_version=pending.decision.policy_version,
            request=pending.request,
            created_at=now,
            expires_at=now + self.settings.timeout,
            session=pending.session,
            reuse_seconds=reuse_window(pending.decision),
        )
        await self._store.insert(approval)
        await self._event("requested", approval)
        if self._webhook is not None:
            self._webhook.announce(approval, self._approve_hint.format(id=approval.id))
        return approval

    async def wait(self, approval: Approval) -> Approval:
        """Until the approval is decided or expires (then it is marked expired); returns it then."""
        self._waiters[approval.id] = self._waiters.get(approval.id, 0) + 1
        wakeup = self._wakeups.setdefault(approval.id, asyncio.Event())
        try:
            while True:
                current = await self._store.get(approval.id)
                if current is None:
                    raise ApprovalStoreError(f"approval {approval.id} vanished from the store")
                if current.status is not ApprovalStatus.PENDING or self.shutting_down:
                    return current
                remaining = current.expires_at - time.time()
                if remaining <= 0:
                    return await self.expire(current)
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), min(remaining, self.settings.poll_interval))
        finally:
            left = self._waiters[approval.id] - 1
            if left:
                self._waiters[approval.id] = left
            else:
                del self._waiters[approval.id]
                self._wakeups.pop(approval.id, None)

    def others_waiting(self, approval: Approval) -> bool:
        """Whether another call (an identical retry) waits on this approval besides the current one."""
        return self._waiters.get(approval.id, 0) > 1

    async def consume(self, approval: Approval) -> bool:
        used = await self._store.consume(approval.id, time.time())
        if used:
            await self._event("used", approval)
        return used

    async def recheck(self, request: dict[str, Any], approval: Approval) -> Decision:
        """The call's own decision again, now with the approval granted: only allow lets it run."""
        context = dict(request["context"])
        approver = approval.approver or {}
        context["approval"] = {"granted": True, "approver": str(approver.get("id", "")), "id": approval.id}
        return await self._policy.engine.decide({**request, "context": context})

    async def cancel(self, approval: Approval, why: str) -> None:
        """The caller gave up (cancelled, disconnected, went away): a pending approval ends.

        Not when the broker itself is stopping: a restart loses the call, never the approval.
        """
        if self.shutting_down:
            return
        cancelled = approval.decided(ApprovalStatus.CANCELLED, at=time.time(), note=why)
        if await self._store.decide(cancelled, ApprovalStatus.PENDING):
            self._wake(approval.id)
            await self._event("cancelled", cancelled)

    async def expire(self, approval: Approval) -> Approval:
        expired = approval.decided(ApprovalStatus.EXPIRED, at=time.time(), note="no decision in time")
        if await self._store.decide(expired, ApprovalStatus.PENDING):
            self._wake(approval.id)
            await self._event("expired", expired)
            return expired
        current = await self._store.get(approval.id)
        return current if current is not None else expired

    # -- the approver's side ---------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval | None:
        return await self._store.get(approval_id)

    async def may_decide(self, approval: Approval, approver: Principal) -> Decision:
        """The policy's answer to: may `approver` decide this approval? Only allow counts."""
        action = "self_approve" if is_self(approval.requester, approver) else "approve"
        context = dict(approval.request["context"])
        context["approval"] = {
            "granted": False,
            "id": approval.id,
            "requester": approval.requester["id"],
            "gates": [r["id"] for r in approval.reasons],
        }
        if approval.requester.get("tenant"):
            context["approval"]["requester_tenant"] = approval.requester["tenant"]
        request = {**approval.request, "principal": approver.document, "action": action, "context": context}
        return await self._policy.engine.decide(request)

    async def decide(
        self, approval_id: str, approver: Principal, *, approve: bool, note: str = "", channel: str = "api"
    ) -> Approval:
        approval = await self._store.get(approval_id)
        if approval is None:
            raise ApprovalRefused(404, f"no approval {approval_id}")
        if approval.status is not ApprovalStatus.PENDING:
            raise ApprovalRefused(409, f"approval {approval_id} is already {approval.status.value}")
        if time.time() >= approval.expires_at:
            await self.expire(approval)
            raise ApprovalRefused(409, f"approval {approval_id} expired before the decision")
        decision = await self.may_decide(approval, approver)
        if decision.effect is not Effect.ALLOW:
            what = (
                "approve their own request (separation of duties)"
                if is_self(approval.requester, approver)
                else "decide this approval"
            )
            raise ApprovalRefused(
                403, f"{approver.type} {approver.id} may not {what}: {decision.reason_text()}"
            )
        now = time.time()
        if approve:
            decided = approval.decided(
                ApprovalStatus.APPROVED,
                at=now,
                approver=approver.document,
                note=note,
                usable_until=now + max(self.settings.grant_ttl, approval.reuse_seconds),
                channel=channel,
            )
        else:
            decided = approval.decided(
                ApprovalStatus.DENIED, at=now, approver=approver.document, note=note, channel=channel
            )
        if not await self._store.decide(decided, ApprovalStatus.PENDING):
            current = await self._store.get(approval_id)
            state = current.status.value if current else "gone"
            raise ApprovalRefused(409, f"approval {approval_id} was decided meanwhile ({state})")
        self._wake(approval_id)
        await self._event(decided.status.value, decided)
        return decided

    async def may_see(self, principal: Principal, approval: Approval) -> bool:
        """Its requester sees it, and whoever may decide it."""
        if identity_key(principal) == approval.requester_key or is_self(approval.requester, principal):
            return True
        return (await self.may_decide(approval, principal)).effect is Effect.ALLOW

    async def visible_to(
        self, principal: Principal, status: ApprovalStatus | None, limit: int
    ) -> list[Approval]:
        return [a for a in await self._store.listing(status, limit) if await self.may_see(principal, a)]

    # -- internals -------------------------------------------------------------------------------

    def _wake(self, approval_id: str) -> None:
        wakeup = self._wakeups.get(approval_id)
        if wakeup is not None:
            wakeup.set()

    async def _event(self, kind: str, approval: Approval) -> None:
        approver = approval.approver.get("id") if approval.approver else None
        log.info(
            "approval %s %s: %s %s by %s%s%s",
            approval.id,
            kind,
            approval.method,
            approval.target,
            approval.requester_key,
            f", approver {approver}" if approver else "",
            f" ({approval.note})" if approval.note else "",
        )
        if self.on_event is not None:
            await self.on_event(kind, approval)

    async def _sweep(self) -> None:
        interval = max(0.2, min(5.0, self.settings.timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                for approval in await self._store.expire_due(time.time()):
                    self._wake(approval.id)
                    await self._event("expired", approval)
            except Exception as exc:  # the store or the audit trail: keep sweeping
                log.error("approvals: expiring overdue approvals failed: %s", exc)
