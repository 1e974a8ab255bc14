"""End to end: upstreams added, removed and changed in the config file take effect without a
restart; callers on untouched upstreams carry on; a broken file changes nothing.

A real broker process, its config file rewritten on disk, reloaded through the loopback admin
endpoint and through SIGHUP; the counter fixture keeps its hit count in memory, so an upstream
that was not restarted is proven untouched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from tests.support.broker import BrokerProcess, broker_config, running_broker, stdio_upstream, write_config

pytestmark = pytest.mark.anyio

NOTES = Path(__file__).resolve().parents[2] / "examples" / "notes_server.py"


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def reload(broker: BrokerProcess, config: dict[str, Any] | str) -> httpx.Response:
    write_config(broker.config_path.parent, config)
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(f"{broker.base_url}/admin/config/reload")


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def test_upstreams_come_and_go_while_sessions_on_others_carry_on(tmp_path: Path) -> None:
    counter = stdio_upstream("counter")
    with running_broker(tmp_path, broker_config({"counter": counter})) as broker:
        async with Client(broker.url, mode="legacy") as client:
            await client.call_tool("counter__hit", {})
            assert not any(n.startswith("notes__") for n in await names(client))

            answer = await reload(broker, broker_config({"counter": counter, "notes": stdio_upstream(NOTES)}))
            assert answer.status_code == 200, answer.text
            assert answer.json()["added"] == ["notes"] and answer.json()["changed"] == []
            assert "notes__read_note" in await names(client)
            assert await client.list_prompts()
            # the same session, the same counter process: its count survived
            assert text_of(await client.call_tool("counter__count", {"tool": "hit"})) == "1"

            answer = await reload(broker, broker_config({"counter": counter}))
            assert answer.json()["removed"] == ["notes"]
            assert not any(n.startswith("notes__") for n in await names(client))
            assert text_of(await client.call_tool("counter__count", {"tool": "hit"})) == "1"

            changed = {**counter, "env": {"COUNTER_LABEL": "v2"}}
            answer = await reload(broker, broker_config({"counter": changed}))
            assert answer.json()["changed"] == ["counter"]
            assert text_of(await client.call_tool("counter__count", {"tool": "hit"})) == "0", "not restarted"


async def test_a_broken_file_is_refused_whole_and_the_running_config_stays(tmp_path: Path) -> None:
    counter = stdio_upstream("counter")
    with running_broker(tmp_path, broker_config({"counter": counter})) as broker:
        broken = broker_config({"counter": counter, "notes": stdio_upstream(NOTES)})
        broken["upstreams"]["notes"]["transport"] = "carrier-pigeon"
        answer = await reload(broker, broken)
        assert answer.status_code == 422
        problems = answer.json()["problems"]
        assert any("upstreams.notes.transport" in p or "transport" in p for p in problems), problems
        async with Client(broker.url, mode="legacy") as client:
            assert not any(n.startswith("notes__") for n in await names(client))
            await client.call_tool("counter__hit", {})


async def test_sighup_reloads_the_config_file(tmp_path: Path) -> None:
    counter = stdio_upstream("counter")
    with running_broker(tmp_path, broker_config({"counter": counter})) as broker:
        write_config(tmp_path, broker_config({"counter": counter, "notes": stdio_upstream(NOTES)}))
        os.kill(broker.pid, signal.SIGHUP)
        async with Client(broker.url, mode="legacy") as client:
            deadline = time.monotonic() + 30
            while "notes__read_note" not in await names(client):
                assert time.monotonic() < deadline, (
                    f"SIGHUP did not add the notes upstream:\n{broker.log()[-2000:]}"
                )
                await anyio.sleep(0.2)
        assert "config reload (SIGHUP): added notes" in broker.log()
