"""PostgresApprovalStore on a real PostgreSQL: the SQLite store's cases, and two replicas on one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from broker.approval.model import ApprovalStatus
from broker.approval.pg_store import PostgresApprovalStore
from broker.approval.store import ApprovalStoreError
from tests.support.postgres import PostgresServer, running_postgres
from tests.unit.approval import test_store as sqlite_cases
from tests.unit.approval.test_store import granted, pending

pytestmark = pytest.mark.anyio

SHARED_CASES: list[Callable[[Any], Awaitable[None]]] = [
    sqlite_cases.test_a_decision_is_a_compare_and_set,
    sqlite_cases.test_racing_deciders_have_exactly_one_winner,
    sqlite_cases.test_a_single_use_grant_is_consumed_once,
    sqlite_cases.test_a_reusable_grant_serves_until_it_lapses,
    sqlite_cases.test_a_retry_finds_only_its_own_binding,
    sqlite_cases.test_overdue_pending_approvals_expire_once,
]


@pytest.fixture
async def replicas(database: str) -> AsyncIterator[tuple[PostgresApprovalStore, PostgresApprovalStore]]:
    """Two stores on one database, as two broker replicas would have."""
    a, b = PostgresApprovalStore(database), PostgresApprovalStore(database)
    await asyncio.gather(a.open(), b.open())  # both create the schema at once: no race
    yield a, b
    await asyncio.gather(a.close(), b.close())


@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda case: case.__name__.removeprefix("test_"))
async def test_the_sqlite_store_cases_hold(case: Callable[[Any], Awaitable[None]], database: str) -> None:
    store = PostgresApprovalStore(database)
    await store.open()
    try:
        await case(store)
    finally:
        await store.close()


async def test_an_approval_asked_on_one_replica_is_decided_on_the_other(
    replicas: tuple[PostgresApprovalStore, PostgresApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    on_b = await b.get(approval.id)
    assert on_b == approval, "replica B does not see what A stored, field for field"
    assert [x.id for x in await b.listing(ApprovalStatus.PENDING, 10)] == [approval.id]
    assert await b.decide(granted(on_b), ApprovalStatus.PENDING)

    seen = await a.for_retry(approval.requester_key, approval.target, approval.argument_digest, time.time())
    assert (
        seen is not None
        and seen.status is ApprovalStatus.APPROVED
        and seen.approver
        == {
            "type": "User",
            "id": "bob",
        }
    )
    assert await a.consume(approval.id, time.time())
    assert not await b.consume(approval.id, time.time()), "a single-use grant was used on both replicas"
    used = await b.get(approval.id)
    assert used is not None and used.used_at is not None


async def test_replicas_racing_to_decide_have_exactly_one_winner(
    replicas: tuple[PostgresApprovalStore, PostgresApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    outcomes = await asyncio.gather(
        *(
            store.decide(approval.decided(status, at=time.time()), ApprovalStatus.PENDING)
            for store in (a, b) * 5
            for status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED)
        )
    )
    assert outcomes.count(True) == 1
    stored = await b.get(approval.id)
    assert stored is not None and stored.status is not ApprovalStatus.PENDING


async def test_replicas_racing_to_use_a_grant_use_it_once(
    replicas: tuple[PostgresApprovalStore, PostgresApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    await a.decide(granted(approval), ApprovalStatus.PENDING)
    now = time.time()
    outcomes = await asyncio.gather(*(store.consume(approval.id, now) for store in (a, b) * 8))
    assert outcomes.count(True) == 1


async def test_replicas_expiring_together_report_each_approval_once(
    replicas: tuple[PostgresApprovalStore, PostgresApprovalStore],
) -> None:
    a, b = replicas
    overdue = [pending(digest=f"d{i}", ttl=-1) for i in range(30)]
    alive = pending(digest="alive", ttl=60)
    for approval in [*overdue, alive]:
        await a.insert(approval)
    now = time.time()
    results = await asyncio.gather(*(store.expire_due(now) for store in (a, b, a, b)))
    expired_ids = [approval.id for result in results for approval in result]
    assert sorted(expired_ids) == sorted(x.id for x in overdue), "an approval expired twice, or not at all"
    returned = [approval for result in results for approval in result]
    assert all(x.status is ApprovalStatus.EXPIRED and x.note == "no decision in time" for x in returned)
    assert [x.id for x in await b.listing(ApprovalStatus.PENDING, 100)] == [alive.id]
    assert len(await a.listing(ApprovalStatus.EXPIRED, 100)) == 30
    assert len(await a.listing(None, 5)) == 5


async def test_approvals_survive_a_new_store(database: str) -> None:
    first = PostgresApprovalStore(database)
    await first.open()
    approval = pending()
    await first.insert(approval)
    await first.close()
    second = PostgresApprovalStore(database)
    await second.open()
    try:
        assert await second.get(approval.id) == approval
        assert await second.get("apr_nope") is None
    finally:
        await second.close()


async def test_a_newer_schema_is_refused(database: str) -> None:
    store = PostgresApprovalStore(database)
    await store.open()
    await store.close()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE broker_schema SET version = 99 WHERE component = 'approvals'")
    newer = PostgresApprovalStore(database)
    with pytest.raises(ApprovalStoreError, match="schema version 99"):
        await newer.open()


async def test_a_wrong_password_fails_closed_without_showing_it(postgres: PostgresServer) -> None:
    dsn = postgres.dsn().replace(postgres.password, "not-the-password")
    store = PostgresApprovalStore(dsn, timeout=2)
    with pytest.raises(ApprovalStoreError, match="cannot open the approval store") as raised:
        await store.open()
    assert "password authentication failed" in str(raised.value), "the cause was lost"
    assert "not-the-password" not in str(raised.value)


async def test_a_database_that_goes_down_fails_closed_and_comes_back() -> None:
    with running_postgres() as server:  # its own server: this test stops it
        dsn = server.create_database()
        store = PostgresApprovalStore(dsn, timeout=1)
        await store.open()
        try:
            approval = pending()
            await store.insert(approval)
            server.stop()
            for _ in range(2):  # the broken pooled connection, then a new one that cannot connect
                with pytest.raises(ApprovalStoreError, match="failed"):
                    await store.get(approval.id)
            with pytest.raises(ApprovalStoreError):
                await store.consume(approval.id, time.time())
            server.start()
            deadline = time.monotonic() + 10
            while True:  # the pool reconnects in the background
                try:
                    assert await store.get(approval.id) == approval
                    break
                except ApprovalStoreError:
                    assert time.monotonic() < deadline, "the store did not reconnect within 10 s"
                    await asyncio.sleep(0.1)
        finally:
            await store.close()
