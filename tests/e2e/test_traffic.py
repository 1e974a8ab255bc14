"""End to end: traffic management on one broker — rate limits, budgets, concurrency caps, the
circuit breaker and the response cache.

A real broker process, the counter fixture (it counts what really arrived, so a refused call
is proven not to have been forwarded), the crashy fixture (its `slow` tool outlives the call
deadline), the official SDK client, `/metrics` and `/readyz` read over HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import broker_config, running_broker, stdio_upstream
from tests.support.opa import opa_binary

pytestmark = pytest.mark.anyio

RATE_LIMITED_POLICIES = Path(__file__).resolve().parents[1] / "support" / "policies" / "rate-limited"


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def refused(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(MCPError) as caught:
        await client.call_tool(tool, arguments or {})
    error = caught.value.error
    data = error.data if isinstance(error.data, dict) else {}
    return {"code": error.code, "message": error.message, **data}


async def hits(client: Client) -> int:
    return int(text_of(await client.call_tool("counter__count", {"tool": "hit"})))


async def metric(base_url: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{base_url}/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_rate_limited_call_is_refused_with_a_retry_hint_and_never_forwarded(tmp_path: Path) -> None:
    traffic = {"rate_limits": [{"name": "hits", "match": {"tool": "counter__hit"}, "limits": ["3/minute"]}]}
    config = broker_config({"counter": stdio_upstream("counter")}, traffic=traffic)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            for _ in range(3):
                await client.call_tool("counter__hit", {})
            reply = await refused(client, "counter__hit")
            assert (reply["code"], reply["reason"]) == (-32000, "rate_limited")
            assert 0 < reply["retryAfter"] <= 60
            assert "hits" in reply["message"]
            assert await hits(client) == 3, "a rate-limited call reached the upstream"
            await client.call_tool("counter__count", {})  # other tools are not covered by the rule
        assert await metric(broker.base_url, "mcp_broker_rate_limited_total", server="counter") == 1
        assert (
            await metric(
                broker.base_url, "mcp_broker_calls_total", tool="counter__hit", outcome="rate_limited"
            )
            == 1
        )


async def test_a_spent_budget_is_refused_until_the_period_resets(tmp_path: Path) -> None:
    traffic = {"quotas": [{"name": "daily", "budget": 5, "period": "day", "costs": {"counter__hit": 3}}]}
    config = broker_config({"counter": stdio_upstream("counter")}, traffic=traffic)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            await client.call_tool("counter__hit", {})  # 3 of 5
            await client.call_tool("counter__count", {})  # 4 of 5
            reply = await refused(client, "counter__hit")  # would be 7
            assert reply["reason"] == "quota_exhausted"
            assert 0 < reply["retryAfter"] <= 86400
            await client.call_tool("counter__count", {})  # 5 of 5: a cheaper call still fits
            assert (await refused(client, "counter__count"))["reason"] == "quota_exhausted"
        assert await metric(broker.base_url, "mcp_broker_quota_budget", rule="daily") == 5
        assert await metric(broker.base_url, "mcp_broker_quota_remaining", rule="daily") == 0


async def test_the_breaker_opens_on_timeouts_and_then_refuses_fast(tmp_path: Path) -> None:
    upstream = stdio_upstream("crashy", timeouts={"call": 0.3})
    traffic = {"breakers": {"failure_ratio": 0.5, "window": 30, "min_calls": 2, "cool_down": 60}}
    config = broker_config({"crashy": upstream}, traffic=traffic)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            assert text_of(await client.call_tool("crashy__ok", {})) == "ok"
            for _ in range(2):
                assert (await refused(client, "crashy__slow", {"seconds": 2}))["reason"] == "upstream_timeout"
            reply = await refused(client, "crashy__ok")
            assert (reply["code"], reply["reason"]) == (-32000, "upstream_circuit_open")
            assert 0 < reply["retryAfter"] <= 60
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{broker.base_url}/readyz")).json()
        [breaker] = [b for b in ready["traffic"]["breakers"] if b["upstream"] == "crashy"]
        assert breaker["state"] == "open"
        assert await metric(broker.base_url, "mcp_broker_breaker_open", server="crashy") == 1
        assert await metric(broker.base_url, "mcp_broker_breaker_opened_total", server="crashy") == 1
        assert await metric(broker.base_url, "mcp_broker_breaker_rejected_total", server="crashy") == 1


async def test_concurrency_caps_refuse_instead_of_queueing_without_bound(tmp_path: Path) -> None:
    traffic = {"concurrency": {"per_upstream": 1, "max_waiters": 0, "max_wait": 0}}
    config = broker_config({"crashy": stdio_upstream("crashy")}, traffic=traffic)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as first, Client(broker.url, mode="legacy") as second:
            slow = asyncio.create_task(first.call_tool("crashy__slow", {"seconds": 1.5}))
            await asyncio.sleep(0.5)
            reply = await refused(second, "crashy__ok")
            assert reply["reason"] == "concurrency_limited"
            assert text_of(await slow) != ""
            assert text_of(await second.call_tool("crashy__ok", {})) == "ok"  # the slot is free again


async def test_the_cache_answers_read_only_idempotent_calls_but_still_decides(tmp_path: Path) -> None:
    traffic = {"cache": {"enabled": True, "ttl": 60}}
    config = broker_config(
        {"counter": stdio_upstream("counter")}, traffic=traffic, audit={"directory": str(tmp_path / "audit")}
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            assert await hits(client) == 0
            await client.call_tool("counter__hit", {})  # a write: never cached
            await client.call_tool("counter__hit", {})
            assert await hits(client) == 0, "the read-only, idempotent count was not served from the cache"
            assert text_of(await client.call_tool("counter__count", {"tool": "hit_destructive"})) == "0"
            assert text_of(await client.call_tool("counter__count", {})) == "2"  # other arguments: a miss
    calls = [line for line in (tmp_path / "audit").glob("audit-*.jsonl")]
    text = "".join(path.read_text() for path in calls)
    assert text.count('"method":"tools/call"') == 6, "every call, cached or not, has its decision and record"


async def test_a_per_tool_deadline_replaces_the_upstream_default(tmp_path: Path) -> None:
    upstream = stdio_upstream("crashy", timeouts={"call": 30, "tools": {"slow": 0.5}})
    config = broker_config({"crashy": upstream})
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            reply = await refused(client, "crashy__slow", {"seconds": 20})
            assert reply["reason"] == "upstream_timeout", reply
            assert "within 0.5s" in reply["message"], reply  # the tool's deadline, not the default 30 s
            assert text_of(await client.call_tool("crashy__ok", {})) == "ok"


@pytest.mark.parametrize("engine", ["cedar", "opa"])
async def test_a_rate_limit_returned_by_the_policy_holds(tmp_path: Path, engine: str) -> None:
    policy: dict[str, Any] = {"engine": engine, "path": str(RATE_LIMITED_POLICIES), "watch": False}
    if engine == "opa":
        policy["opa"] = {"binary": str(opa_binary())}
    config = broker_config({"counter": stdio_upstream("counter")}, policy=policy)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            for _ in range(2):
                await client.call_tool("counter__hit", {})
            reply = await refused(client, "counter__hit")
            assert reply["reason"] == "rate_limited", reply
            assert "policy:hits-are-rationed" in reply["message"], reply
            assert await hits(client) == 2, "a call over the policy's limit reached the upstream"
            for _ in range(3):
                await client.call_tool("counter__count", {})  # no obligation: not limited
