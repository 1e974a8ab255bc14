"""SqliteApprovalStore on a real file: compare-and-set decisions, grants used once, expiry, reopening."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.approval.model import Approval, ApprovalStatus, new_approval_id
from broker.approval.store import ApprovalStoreError, SqliteApprovalStore

pytestmark = pytest.mark.anyio


def pending(
    *, key: str = "User|alice||", target: str = "notes__delete_note", digest: str = "d1", ttl: float = 60
) -> Approval:
    now = time.time()
    return Approval(
        id=new_approval_id(),
        status=ApprovalStatus.PENDING,
        requester={"type": "User", "id": "alice"},
        requester_key=key,
        method="tools/call",
        server="notes",
        target=target,
        argument_digest=digest,
        arguments={"note_id": "a"},
        reasons=[{"id": "gate", "message": "needs approval"}],
        policy_version="sha256:1",
        request={"principal": {}, "action": "call_tool", "resource": {}, "context": {}},
        created_at=now,
        expires_at=now + ttl,
    )


def granted(approval: Approval, *, valid: float = 60, reuse: float = 0) -> Approval:
    now = time.time()
    return replace(approval, reuse_seconds=reuse).decided(
        ApprovalStatus.APPROVED, at=now, approver={"type": "User", "id": "bob"}, usable_until=now + valid
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteApprovalStore]:
    opened = SqliteApprovalStore(tmp_path / "state" / "approvals.db")
    await opened.open()
    yield opened
    await opened.close()


async def test_a_decision_is_a_compare_and_set(store: SqliteApprovalStore) -> None:
    approval = pending()
    await store.insert(approval)
    assert await store.decide(granted(approval), ApprovalStatus.PENDING)
    denied = approval.decided(ApprovalStatus.DENIED, at=time.time())
    assert not await store.decide(denied, ApprovalStatus.PENDING), "a second decision overwrote the first"
    stored = await store.get(approval.id)
    assert stored is not None and stored.status is ApprovalStatus.APPROVED
    assert stored.approver == {"type": "User", "id": "bob"}


async def test_racing_deciders_have_exactly_one_winner(store: SqliteApprovalStore) -> None:
    approval = pending()
    await store.insert(approval)
    outcomes = await asyncio.gather(
        *(
            store.decide(approval.decided(status, at=time.time()), ApprovalStatus.PENDING)
            for status in [ApprovalStatus.APPROVED, ApprovalStatus.DENIED] * 10
        )
    )
    assert outcomes.count(True) == 1


async def test_a_single_use_grant_is_consumed_once(store: SqliteApprovalStore) -> None:
    approval = pending()
    await store.insert(approval)
    assert not await store.consume(approval.id, time.time()), "a pending approval was usable"
    await store.decide(granted(approval), ApprovalStatus.PENDING)
    assert await store.consume(approval.id, time.time())
    assert not await store.consume(approval.id, time.time())
    assert (
        await store.for_retry(approval.requester_key, approval.target, approval.argument_digest, time.time())
        is None
    )


async def test_a_reusable_grant_serves_until_it_lapses(store: SqliteApprovalStore) -> None:
    approval = pending()
    await store.insert(approval)
    await store.decide(granted(approval, valid=0.3, reuse=0.3), ApprovalStatus.PENDING)
    assert await store.consume(approval.id, time.time())
    assert await store.consume(approval.id, time.time())
    await asyncio.sleep(0.35)
    assert not await store.consume(approval.id, time.time())


async def test_a_retry_finds_only_its_own_binding(store: SqliteApprovalStore) -> None:
    mine = pending()
    await store.insert(mine)
    now = time.time()
    found = await store.for_retry(mine.requester_key, mine.target, mine.argument_digest, now)
    assert found is not None and found.id == mine.id
    assert await store.for_retry("User|bob||", mine.target, mine.argument_digest, now) is None
    assert await store.for_retry(mine.requester_key, "notes__archive_all", mine.argument_digest, now) is None
    assert await store.for_retry(mine.requester_key, mine.target, "other-digest", now) is None


async def test_overdue_pending_approvals_expire_once(store: SqliteApprovalStore) -> None:
    overdue, alive = pending(ttl=-1), pending(ttl=60)
    await store.insert(overdue)
    await store.insert(alive)
    expired = await store.expire_due(time.time())
    assert [a.id for a in expired] == [overdue.id]
    assert await store.expire_due(time.time()) == []
    stored = await store.get(overdue.id)
    assert stored is not None and stored.status is ApprovalStatus.EXPIRED
    assert not await store.decide(granted(overdue), ApprovalStatus.PENDING), "an expired approval was granted"


async def test_approvals_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    first = SqliteApprovalStore(path)
    await first.open()
    approval = pending()
    await first.insert(approval)
    await first.close()
    second = SqliteApprovalStore(path)
    await second.open()
    try:
        assert await second.get(approval.id) == approval
        assert [a.id for a in await second.listing(ApprovalStatus.PENDING, 10)] == [approval.id]
    finally:
        await second.close()


async def test_an_unusable_location_fails_closed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = SqliteApprovalStore(blocker / "approvals.db")
    with pytest.raises(ApprovalStoreError, match="cannot open the approval store"):
        await store.open()
    await store.close()


async def test_a_broken_database_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    store = SqliteApprovalStore(path)
    await store.open()
    try:
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE approvals")
        with pytest.raises(ApprovalStoreError, match="failed"):
            await store.insert(pending())
    finally:
        await store.close()
