"""The approval desk with a real store and the real Cedar engine (tests/support/policies/approvals)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.approval.approvals import (
    ApprovalRefused,
    Approvals,
    ApprovalSettings,
    PendingCall,
    is_self,
    reuse_window,
)
from broker.approval.model import ApprovalStatus
from broker.approval.store import SqliteApprovalStore
from broker.identity.principal import Principal
from broker.policy.cedar import CedarEngine
from broker.policy.decision import Decision, Effect, Reason
from broker.policy.point import PolicyPoint
from broker.policy.request import CallFacts, build_request

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "tests" / "support" / "policies" / "approvals"
SCHEMA = REPO / "schemas" / "mcp.cedarschema"

ALICE = Principal("User", "alice", roles=("engineer", "approver"))
BOB = Principal("User", "bob", roles=("approver",))
CAROL = Principal("User", "carol")
DAVE = Principal("User", "dave", roles=("self-approver",))
BOT_FOR_DAVE = Principal("Agent", "bot", roles=("self-approver", "approver"), acting_for="dave")

TOOL: dict[str, Any] = {
    "type": "Tool",
    "id": "notes__delete_note",
    "name": "delete_note",
    "server": "notes",
    "tenants": [],
    "tags": [],
    "annotations": {
        "readOnlyHint": False,
        "destructiveHint": True,
        "idempotentHint": False,
        "openWorldHint": False,
    },
}


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Approvals]:
    policy = PolicyPoint(CedarEngine(POLICIES, SCHEMA))
    await policy.start()
    approvals = Approvals(
        SqliteApprovalStore(tmp_path / "approvals.db"),
        policy,
        ApprovalSettings(timeout=30, grant_ttl=60, poll_interval=0.05),
    )
    await approvals.start()
    yield approvals
    await approvals.close()
    await policy.stop()


async def pending_call(desk: Approvals, principal: Principal, note: str = "a") -> PendingCall:
    request, summary = build_request(
        principal, "call_tool", TOOL, {"note_id": note}, CallFacts("streamable-http", "2025-11-25")
    )
    decision = await desk._policy.engine.decide(request)
    assert decision.effect is Effect.REQUIRE_APPROVAL
    return PendingCall(
        principal=principal,
        method="tools/call",
        server="notes",
        target="notes__delete_note",
        argument_digest=summary.digest,
        arguments=request["context"]["arguments"],
        request=request,
        decision=decision,
        session=None,
    )


def test_who_counts_as_the_requester_themself() -> None:
    requester = ALICE.document
    assert is_self(requester, ALICE)
    assert is_self(requester, Principal("User", "alice", roles=("other",)))  # other claims, same person
    assert not is_self(requester, BOB)
    assert is_self(BOT_FOR_DAVE.document, DAVE), "the user an agent acts for approving the agent's call"
    assert is_self(DAVE.document, BOT_FOR_DAVE), "an agent acting for the requester"
    assert not is_self(BOT_FOR_DAVE.document, Principal("Agent", "other-bot"))


def test_a_grant_is_reusable_only_when_every_gate_says_so() -> None:
    def decision(*windows: float) -> Decision:
        reasons = tuple(Reason(f"g{i}", "", "", w) for i, w in enumerate(windows))
        return Decision(Effect.REQUIRE_APPROVAL, reasons, "cedar", "v")

    assert reuse_window(decision(600)) == 600
    assert reuse_window(decision(600, 60)) == 60
    assert reuse_window(decision(600, 0)) == 0
    assert reuse_window(decision()) == 0


async def test_approvers_decide_and_requesters_cannot(desk: Approvals) -> None:
    approval = await desk.open_for(await pending_call(desk, ALICE))
    assert (await desk.may_decide(approval, BOB)).effect is Effect.ALLOW
    assert (await desk.may_decide(approval, CAROL)).effect is Effect.DENY
    own = await desk.may_decide(approval, ALICE)
    assert own.effect is Effect.DENY, "an approver approved their own call"
    with pytest.raises(ApprovalRefused) as caught:
        await desk.decide(approval.id, ALICE, approve=True)
    assert caught.value.status == 403 and "separation of duties" in caught.value.message
    decided = await desk.decide(approval.id, BOB, approve=True, note="ok")
    assert decided.status is ApprovalStatus.APPROVED and decided.usable_until is not None
    with pytest.raises(ApprovalRefused) as again:
        await desk.decide(approval.id, BOB, approve=False)
    assert again.value.status == 409
    with pytest.raises(ApprovalRefused) as unknown:
        await desk.decide("apr_nope", BOB, approve=True)
    assert unknown.value.status == 404


async def test_self_approval_only_where_a_policy_permits_it(desk: Approvals) -> None:
    mine = await desk.open_for(await pending_call(desk, DAVE))
    assert (await desk.may_decide(mine, DAVE)).effect is Effect.ALLOW
    agents = await desk.open_for(await pending_call(desk, BOT_FOR_DAVE))
    decision = await desk.may_decide(agents, DAVE)
    assert decision.effect is Effect.ALLOW, "dave self-approves his agent's call (self_approve permitted)"
    assert (await desk.may_decide(agents, BOB)).effect is Effect.ALLOW


async def test_an_identical_call_shares_the_pending_approval_and_other_arguments_do_not(
    desk: Approvals,
) -> None:
    first = await desk.open_for(await pending_call(desk, ALICE, "a"))
    again = await desk.open_for(await pending_call(desk, ALICE, "a"))
    other = await desk.open_for(await pending_call(desk, ALICE, "b"))
    someone_else = await desk.open_for(await pending_call(desk, DAVE, "a"))
    assert again.id == first.id
    assert len({first.id, other.id, someone_else.id}) == 3


async def test_a_waiting_call_wakes_on_the_decision(desk: Approvals) -> None:
    approval = await desk.open_for(await pending_call(desk, ALICE))
    waiter = asyncio.create_task(desk.wait(approval))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await desk.decide(approval.id, BOB, approve=False, note="no")
    decided = await asyncio.wait_for(waiter, 5)
    assert decided.status is ApprovalStatus.DENIED and decided.note == "no"


async def test_a_wait_ends_with_the_expiry(tmp_path: Path) -> None:
    policy = PolicyPoint(CedarEngine(POLICIES, SCHEMA))
    await policy.start()
    desk = Approvals(
        SqliteApprovalStore(tmp_path / "a.db"), policy, ApprovalSettings(timeout=0.3, poll_interval=0.05)
    )
    await desk.start()
    try:
        approval = await desk.open_for(await pending_call(desk, ALICE))
        started = time.monotonic()
        ended = await asyncio.wait_for(desk.wait(approval), 5)
        assert ended.status is ApprovalStatus.EXPIRED
        assert time.monotonic() - started >= 0.25
        with pytest.raises(ApprovalRefused) as late:
            await desk.decide(approval.id, BOB, approve=True)
        assert late.value.status == 409
    finally:
        await desk.close()
        await policy.stop()


async def test_the_grant_is_rechecked_against_the_policy(desk: Approvals) -> None:
    call = await pending_call(desk, ALICE)
    approval = await desk.open_for(call)
    decided = await desk.decide(approval.id, BOB, approve=True)
    assert await desk.consume(decided)
    recheck = await desk.recheck(call.request, decided)
    assert recheck.effect is Effect.ALLOW
    assert not await desk.consume(decided), "a single-use grant was used twice"


async def test_a_stopping_broker_keeps_pending_approvals(desk: Approvals) -> None:
    approval = await desk.open_for(await pending_call(desk, ALICE))
    waiter = asyncio.create_task(desk.wait(approval))
    await asyncio.sleep(0.05)
    desk.prepare_shutdown()
    ended = await asyncio.wait_for(waiter, 5)
    assert ended.status is ApprovalStatus.PENDING
    await desk.cancel(approval, "the caller went away with the broker")
    stored = await desk.get(approval.id)
    assert stored is not None and stored.status is ApprovalStatus.PENDING
