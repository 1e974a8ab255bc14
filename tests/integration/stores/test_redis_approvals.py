"""RedisApprovalStore on a real redis-server: the SQLite store's cases, and two replicas on one Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.approval.model import ApprovalStatus
from broker.approval.redis_store import EXPIRY_BATCH, RedisApprovalStore
from broker.approval.store import ApprovalStoreError
from tests.support.redis import RedisServer, running_redis
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


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone: tests share one Redis and never see each other's keys."""
    return f"test-{secrets.token_hex(6)}:"


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisApprovalStore]:
    opened = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def replicas(
    redis_server: RedisServer, prefix: str
) -> AsyncIterator[tuple[RedisApprovalStore, RedisApprovalStore]]:
    """Two stores on one Redis and prefix, as two broker replicas would have."""
    a = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    b = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    await asyncio.gather(a.open(), b.open())
    yield a, b
    await asyncio.gather(a.close(), b.close())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_process(port: int, *options: str) -> subprocess.Popen[bytes]:
    """A redis-server of this test's own (a password, persistence, a fixed port to restart on)."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is required by the tests: run scripts/install-services.sh"
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"redis-server did not come up on 127.0.0.1:{port}")
        time.sleep(0.02)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda case: case.__name__.removeprefix("test_"))
async def test_the_sqlite_store_cases_hold(
    case: Callable[[Any], Awaitable[None]], store: RedisApprovalStore
) -> None:
    await case(store)


async def test_an_approval_asked_on_one_replica_is_decided_on_the_other(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    on_b = await b.get(approval.id)
    assert on_b == approval, "replica B does not see what A stored, field for field"
    assert [x.id for x in await b.listing(ApprovalStatus.PENDING, 10)] == [approval.id]
    assert await b.decide(granted(on_b), ApprovalStatus.PENDING)

    seen = await a.for_retry(approval.requester_key, approval.target, approval.argument_digest, time.time())
    assert seen is not None and seen.status is ApprovalStatus.APPROVED
    assert seen.approver == {"type": "User", "id": "bob"}
    assert await a.consume(approval.id, time.time())
    assert not await b.consume(approval.id, time.time()), "a single-use grant was used on both replicas"
    used = await b.get(approval.id)
    assert used is not None and used.used_at is not None
    assert [x.id for x in await b.listing(ApprovalStatus.APPROVED, 10)] == [approval.id]
    assert await b.listing(ApprovalStatus.PENDING, 10) == []


async def test_replicas_racing_to_decide_have_exactly_one_winner(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
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
    statuses = [x.status for x in await a.listing(None, 10)]
    assert statuses == [stored.status], "the approval is in the listing once, under its final status"


async def test_replicas_racing_to_use_a_grant_use_it_once(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    await a.decide(granted(approval), ApprovalStatus.PENDING)
    now = time.time()
    outcomes = await asyncio.gather(*(store.consume(approval.id, now) for store in (a, b) * 8))
    assert outcomes.count(True) == 1


async def test_a_reusable_grant_is_found_and_used_on_both_replicas(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
) -> None:
    a, b = replicas
    approval = pending()
    await a.insert(approval)
    await b.decide(granted(approval, reuse=60), ApprovalStatus.PENDING)
    for store in (a, b, a):
        now = time.time()
        found = await store.for_retry(approval.requester_key, approval.target, approval.argument_digest, now)
        assert found is not None and found.id == approval.id
        assert await store.consume(approval.id, now)


async def test_replicas_expiring_together_report_each_approval_once(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
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
    for x in overdue[:3]:
        stored = await b.get(x.id)
        assert stored is not None and stored.status is ApprovalStatus.EXPIRED
        assert await b.for_retry(x.requester_key, x.target, x.argument_digest, now - 10) is None


async def test_more_overdue_approvals_than_one_batch_all_expire_once(
    replicas: tuple[RedisApprovalStore, RedisApprovalStore],
) -> None:
    a, b = replicas
    overdue = [pending(digest=f"d{i}", ttl=-1) for i in range(EXPIRY_BATCH * 2 + 10)]
    await asyncio.gather(*(a.insert(approval) for approval in overdue))
    now = time.time()
    results = await asyncio.gather(a.expire_due(now), b.expire_due(now))
    expired_ids = [approval.id for result in results for approval in result]
    assert len(expired_ids) == len(overdue)
    assert set(expired_ids) == {x.id for x in overdue}
    assert await a.listing(ApprovalStatus.PENDING, 10) == []


async def test_an_expired_approval_cannot_be_decided_and_a_decided_one_does_not_expire(
    store: RedisApprovalStore,
) -> None:
    decided, left = pending(ttl=0.2), pending(digest="d2", ttl=0.2)
    await store.insert(decided)
    await store.insert(left)
    assert await store.decide(granted(decided), ApprovalStatus.PENDING)
    await asyncio.sleep(0.25)
    assert [x.id for x in await store.expire_due(time.time())] == [left.id]
    assert not await store.decide(granted(left), ApprovalStatus.PENDING)
    stored = await store.get(decided.id)
    assert stored is not None and stored.status is ApprovalStatus.APPROVED


async def test_listing_is_newest_first_by_status_and_limited(store: RedisApprovalStore) -> None:
    approvals = [pending(digest=f"d{i}") for i in range(4)]  # created in this order
    for approval in reversed(approvals):  # inserted in the other
        await store.insert(approval)
    await store.decide(approvals[1].decided(ApprovalStatus.DENIED, at=time.time()), ApprovalStatus.PENDING)
    newest_first = [x.id for x in reversed(approvals)]
    assert [x.id for x in await store.listing(None, 10)] == newest_first
    assert [x.id for x in await store.listing(None, 2)] == newest_first[:2]
    assert [x.id for x in await store.listing(ApprovalStatus.PENDING, 10)] == [
        approvals[3].id,
        approvals[2].id,
        approvals[0].id,
    ]
    assert [x.id for x in await store.listing(ApprovalStatus.DENIED, 10)] == [approvals[1].id]
    assert await store.listing(None, 0) == []


async def test_a_retry_finds_the_newest_usable_approval(store: RedisApprovalStore) -> None:
    older, newer = pending(), pending()
    await store.insert(older)
    await store.insert(newer)
    found = await store.for_retry(older.requester_key, older.target, older.argument_digest, time.time())
    assert found is not None and found.id == newer.id
    await store.decide(newer.decided(ApprovalStatus.DENIED, at=time.time()), ApprovalStatus.PENDING)
    found = await store.for_retry(older.requester_key, older.target, older.argument_digest, time.time())
    assert found is not None and found.id == older.id, "a denied approval hid the pending one"


async def test_an_id_is_inserted_once(store: RedisApprovalStore) -> None:
    approval = pending()
    await store.insert(approval)
    with pytest.raises(ApprovalStoreError, match="already has"):
        await store.insert(approval)


async def test_key_prefixes_keep_brokers_apart(redis_server: RedisServer) -> None:
    first = RedisApprovalStore(redis_server.url, key_prefix="first-broker:")
    second = RedisApprovalStore(redis_server.url, key_prefix="second-broker:")
    await first.open()
    await second.open()
    try:
        approval = pending()
        await first.insert(approval)
        assert await second.get(approval.id) is None
        assert await second.listing(None, 10) == []
        assert await second.expire_due(time.time() + 3600) == []
        stored = await first.get(approval.id)
        assert stored is not None and stored.status is ApprovalStatus.PENDING
    finally:
        await first.close()
        await second.close()


async def test_approvals_survive_a_new_store(redis_server: RedisServer, prefix: str) -> None:
    first = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    await first.open()
    approval = pending()
    await first.insert(approval)
    await first.close()
    second = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    await second.open()
    try:
        assert await second.get(approval.id) == approval
        assert await second.get("apr_nope") is None
    finally:
        await second.close()


async def test_another_layout_version_is_refused(redis_server: RedisServer, prefix: str) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(prefix + "{approvals}:schema", "99")
    store = RedisApprovalStore(redis_server.url, key_prefix=prefix)
    with pytest.raises(ApprovalStoreError, match="layout version b'99'"):
        await store.open()
    with pytest.raises(ApprovalStoreError, match="not open"):
        await store.get("apr_x")


async def test_a_damaged_key_fails_closed(
    redis_server: RedisServer, store: RedisApprovalStore, prefix: str
) -> None:
    approval = pending()
    await store.insert(approval)
    with redis.Redis.from_url(redis_server.url) as client:
        client.delete(prefix + "{approvals}:approval:" + approval.id)
        client.set(prefix + "{approvals}:approval:" + approval.id, "not a hash")
    with pytest.raises(ApprovalStoreError, match="WRONGTYPE"):
        await store.get(approval.id)
    with pytest.raises(ApprovalStoreError, match="failed"):
        await store.consume(approval.id, time.time())


async def test_no_redis_fails_closed_at_open() -> None:
    store = RedisApprovalStore(f"redis://127.0.0.1:{_free_port()}/0", timeout=1)
    with pytest.raises(ApprovalStoreError, match=r"cannot be opened: ConnectionError"):
        await store.open()


async def test_an_unsupported_url_fails_closed_at_open() -> None:
    store = RedisApprovalStore("http://user:hunter2@127.0.0.1/0")
    with pytest.raises(ApprovalStoreError, match="cannot be opened") as raised:
        await store.open()
    assert "hunter2" not in str(raised.value)


async def test_a_wrong_password_fails_closed_without_showing_it() -> None:
    port = _free_port()
    process = _redis_process(port, "--requirepass", "the-right-password", "--appendonly", "no")
    try:
        store = RedisApprovalStore(f"redis://:not-the-password@127.0.0.1:{port}/0", timeout=2)
        with pytest.raises(ApprovalStoreError, match="cannot be opened") as raised:
            await store.open()
        assert "AuthenticationError" in str(raised.value), "the cause was lost"
        assert f"127.0.0.1:{port}/0" in str(raised.value), "the server is not named"
        assert "not-the-password" not in str(raised.value)

        right = RedisApprovalStore(f"redis://:the-right-password@127.0.0.1:{port}/0", timeout=2)
        await right.open()
        try:
            approval = pending()
            await right.insert(approval)
            assert await right.get(approval.id) == approval
        finally:
            await right.close()
    finally:
        _stop(process)


async def test_a_redis_that_may_lose_approvals_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    process = _redis_process(port, "--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
    store = RedisApprovalStore(f"redis://127.0.0.1:{port}/0")
    try:
        with caplog.at_level(logging.WARNING, logger="broker.approval"):
            await store.open()
    finally:
        await store.close()
        _stop(process)
    warnings = [record.getMessage() for record in caplog.records]
    assert any("appendonly is off" in message for message in warnings), warnings
    assert any("maxmemory-policy allkeys-lru" in message for message in warnings), warnings


BROKER_ACL = (
    "on >broker-password ~mcp-broker:* +ping +info +get +set +hmget +exists +hset +zadd +zrem"
    " +zrevrange +zrangebyscore +evalsha +script|load"
)
"""The ACL docs/scale-out-redis.md gives the broker's Redis user (scripts' commands are checked too)."""


async def test_the_documented_acl_is_enough_for_every_operation(redis_server: RedisServer) -> None:
    user = f"broker-{secrets.token_hex(4)}"
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.execute_command("ACL", "SETUSER", user, "reset", *BROKER_ACL.split())
        admin.script_flush()  # the store must load its scripts itself, as after a Redis restart
    store = RedisApprovalStore(f"redis://{user}:broker-password@127.0.0.1:{redis_server.port}/0")
    await store.open()
    try:
        single, reusable, overdue = pending(), pending(digest="d2"), pending(digest="d3", ttl=-1)
        for approval in (single, reusable, overdue):
            await store.insert(approval)
        assert await store.decide(granted(single), ApprovalStatus.PENDING)
        assert await store.decide(granted(reusable, reuse=60), ApprovalStatus.PENDING)
        now = time.time()
        found = await store.for_retry(single.requester_key, single.target, single.argument_digest, now)
        assert found is not None and found.id == single.id
        assert await store.consume(single.id, now)
        assert await store.consume(reusable.id, now)
        assert [x.id for x in await store.expire_due(now)] == [overdue.id]
        assert len(await store.listing(None, 10)) == 3
        assert await store.get(single.id) is not None
    finally:
        await store.close()


async def test_a_redis_that_stops_fails_closed_and_comes_back_with_its_approvals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    persistent = ("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path))
    process = _redis_process(port, *persistent)
    store = RedisApprovalStore(f"redis://127.0.0.1:{port}/0", timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger="broker.approval"):
            await store.open()
        assert not any("appendonly" in record.getMessage() for record in caplog.records)
        approval = pending()
        await store.insert(approval)
        await store.decide(granted(approval), ApprovalStatus.PENDING)

        _stop(process)
        with pytest.raises(ApprovalStoreError, match="failed: ConnectionError"):
            await store.get(approval.id)
        with pytest.raises(ApprovalStoreError):
            await store.consume(approval.id, time.time())
        with pytest.raises(ApprovalStoreError):
            await store.expire_due(time.time())

        process = _redis_process(port, *persistent)
        assert await store.consume(approval.id, time.time()), "the grant was lost across the restart"
        assert not await store.consume(approval.id, time.time())
    finally:
        await store.close()
        _stop(process)


async def test_a_redis_that_stops_answering_fails_closed_after_the_timeout() -> None:
    port = _free_port()
    process = _redis_process(port, "--appendonly", "no")
    store = RedisApprovalStore(f"redis://127.0.0.1:{port}/0", timeout=1)
    try:
        await store.open()
        approval = pending()
        await store.insert(approval)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ApprovalStoreError, match="failed: TimeoutError"):
                await store.get(approval.id)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert await store.get(approval.id) == approval
    finally:
        await store.close()
        _stop(process)
