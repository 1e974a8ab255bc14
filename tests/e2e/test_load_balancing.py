"""End to end: one upstream name, several instances behind it (round robin, failover).

A real broker process running three copies of the counter fixture (each counts only the calls
it received, so the spread is visible), the official SDK client, `/readyz` over HTTP, and a
kill -9 of one instance by PID.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.support.broker import broker_config, running_broker, stdio_upstream

pytestmark = pytest.mark.anyio


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_calls_are_spread_over_instances_and_survive_one_dying(tmp_path: Path) -> None:
    config = broker_config({"counter": stdio_upstream("counter", instances=3, balance="round_robin")})
    with running_broker(tmp_path, config) as broker:
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{broker.base_url}/readyz")).json()
        instances = ready["upstreams"]["counter"]["instances"]
        assert [i["state"] for i in instances] == ["ready"] * 3

        async with Client(broker.url) as client:
            assert "counter__hit" in {t.name for t in (await client.list_tools()).tools}
            for _ in range(6):
                await client.call_tool("counter__hit", {})
            counts = []
            for _ in range(3):
                counts.append(int(text_of(await client.call_tool("counter__count", {"tool": "hit"}))))
            counts.sort()
            assert counts == [2, 2, 2], f"round robin should give each instance 2 of 6 hits, got {counts}"

            children = broker.children()
            assert len(children) >= 3
            os.kill(children[0], signal.SIGKILL)
            ok, failed = 0, 0
            deadline = time.monotonic() + 20
            while ok < 6:
                assert time.monotonic() < deadline, "calls did not keep succeeding on the other instances"
                try:
                    await client.call_tool("counter__count", {})
                    ok += 1
                except MCPError:
                    failed += 1  # a call that raced the death of its instance (not retried: it may have run)
            assert failed <= 1, f"{failed} calls failed after one of three instances died"
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{broker.base_url}/readyz")).json()
        assert ready["upstreams"]["counter"]["state"] == "ready"
