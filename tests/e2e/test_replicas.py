"""End to end: two broker replicas sharing state through real PostgreSQL and Redis servers.

Replica A and replica B are separate broker processes, each with its own counter upstream.
They share approvals and the audit trail through one PostgreSQL database and rate-limit
counters through one Redis; nothing else connects them. An approval asked for on A is
decided through B's API and A's waiting call completes; a global rate limit holds across
both; the audit records of both verify as one chain (`mcp-broker audit export`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.support.broker import BrokerProcess, broker_config, broker_env, running_broker, stdio_upstream
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.redis import running_redis
from tests.support.tokens import bearer_client

pytestmark = pytest.mark.anyio

POLICIES = Path(__file__).resolve().parents[1] / "support" / "policies" / "approvals"
PEOPLE = {"alice": ["engineer"], "bob": ["approver"]}
KEYS = {name: f"mcpb_{name}-replica-key-0123456789" for name in PEOPLE}
DSN_ENV = "BROKER_TEST_PG_DSN"


def replica_config(redis_url: str) -> dict[str, Any]:
    keys = [
        {"sha256": api_key_digest(KEYS[name]), "principal": {"type": "User", "id": name, "roles": roles}}
        for name, roles in PEOPLE.items()
    ]
    shared = {"dsn": {"env": DSN_ENV}}
    return broker_config(
        {"counter": stdio_upstream("counter")},
        policy={"path": str(POLICIES), "watch": False},
        identity={"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}},
        approvals={"store": "postgresql", "postgresql": shared, "timeout": 60},
        audit={"sink": "postgresql", "postgresql": shared},
        traffic={
            "storage": redis_url,
            "rate_limits": [
                {"name": "fleet-hits", "match": {"tool": "counter__hit"}, "limits": ["4/minute"]}
            ],
        },
    )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, BrokerProcess, str]]:
    with ExitStack() as stack:
        postgres: PostgresServer = stack.enter_context(running_postgres())
        redis = stack.enter_context(running_redis())
        dsn = postgres.create_database("replicas")
        config = replica_config(redis.url)
        env = {DSN_ENV: dsn}
        a = stack.enter_context(running_broker(tmp_path_factory.mktemp("replica-a"), config, env=env))
        b = stack.enter_context(running_broker(tmp_path_factory.mktemp("replica-b"), config, env=env))
        yield a, b, dsn


@asynccontextmanager
async def caller(broker: BrokerProcess, who: str) -> AsyncIterator[Client]:
    async with bearer_client(broker.url, KEYS[who], mode="legacy") as client:
        yield client


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def api(broker: BrokerProcess, who: str, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.request(
            method, broker.base_url + path, headers={"authorization": f"Bearer {KEYS[who]}"}, json={}
        )


def export(copy: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    """`mcp-broker audit export` of the shared table, as an operator runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "broker.cli",
            "audit",
            "export",
            "--dsn-env",
            DSN_ENV,
            str(copy),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=broker_env({DSN_ENV: dsn}),
        timeout=120,
        check=False,
    )


async def test_an_approval_asked_on_one_replica_is_granted_through_the_other(
    replicas: tuple[BrokerProcess, BrokerProcess, str],
) -> None:
    a, b, _ = replicas
    async with caller(a, "alice") as alice:
        call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        deadline = time.monotonic() + 20
        found: list[dict[str, Any]] = []
        while not found:
            assert time.monotonic() < deadline, "replica B never saw the approval replica A asked for"
            listing = await api(b, "bob", "GET", "/approvals?status=pending")
            assert listing.status_code == 200, listing.text
            found = [x for x in listing.json()["approvals"] if x["target"] == "counter__hit_destructive"]
            await asyncio.sleep(0.1)
        decided = await api(b, "bob", "POST", f"/approvals/{found[0]['id']}/approve")
        assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(call, 20)  # A polls the shared store and carries on
        assert not result.is_error
        assert text_of(result) == "1"


async def test_a_global_rate_limit_holds_across_replicas(
    replicas: tuple[BrokerProcess, BrokerProcess, str],
) -> None:
    a, b, _ = replicas
    async with caller(a, "alice") as on_a, caller(b, "alice") as on_b:
        for client in (on_a, on_b, on_a, on_b):
            await client.call_tool("counter__hit", {})
        for client in (on_a, on_b):
            with pytest.raises(MCPError) as caught:
                await client.call_tool("counter__hit", {})
            data = caught.value.error.data
            assert isinstance(data, dict) and data["reason"] == "rate_limited", caught.value.error
        hits = [int(text_of(await c.call_tool("counter__count", {"tool": "hit"}))) for c in (on_a, on_b)]
        assert sum(hits) == 4, (
            f"the two upstreams received {hits} hits: the limit did not hold across replicas"
        )


async def test_the_records_of_both_replicas_verify_as_one_chain(
    replicas: tuple[BrokerProcess, BrokerProcess, str], tmp_path: Path
) -> None:
    a, b, dsn = replicas
    async with caller(a, "alice") as on_a, caller(b, "alice") as on_b:
        await asyncio.gather(*(c.call_tool("counter__count", {}) for c in (on_a, on_b) for _ in range(10)))
    copy = tmp_path / "copy"
    done = await asyncio.to_thread(export, copy, dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.split("\n", 1)[1])
    assert report["ok"] is True, report
    records = [json.loads(line) for path in copy.glob("*.jsonl") for line in path.read_text().splitlines()]
    counts = [
        r
        for r in records
        if r.get("kind") == "request" and (r.get("target") or {}).get("id") == "counter__count"
    ]
    assert len(counts) >= 20
    sessions = {r["session"] for r in counts}
    assert len(sessions) >= 2, "records of both replicas are in the one chain"


async def test_replicas_can_share_their_approvals_through_redis(tmp_path: Path) -> None:
    keys = [
        {"sha256": api_key_digest(KEYS[name]), "principal": {"type": "User", "id": name, "roles": roles}}
        for name, roles in PEOPLE.items()
    ]
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis())
        config = broker_config(
            {"counter": stdio_upstream("counter")},
            policy={"path": str(POLICIES), "watch": False},
            identity={"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}},
            approvals={"store": "redis", "redis": {"url": {"env": "BROKER_TEST_REDIS_URL"}}, "timeout": 60},
        )
        env = {"BROKER_TEST_REDIS_URL": redis.url}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = stack.enter_context(running_broker(tmp_path / "a", config, env=env))
        b = stack.enter_context(running_broker(tmp_path / "b", config, env=env))
        await test_an_approval_asked_on_one_replica_is_granted_through_the_other((a, b, ""))
