"""examples/drifting_server.py itself: the switch, the announcements in both eras, the state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.fixtures import example_script, stdio_params

pytestmark = pytest.mark.anyio


def forecast(tools: types.ListToolsResult) -> dict[str, Any]:
    [tool] = [t for t in tools.tools if t.name == "get_forecast"]
    return tool.model_dump(mode="json", by_alias=True, exclude_none=True)


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_switch_drifts_and_announces_it_legacy(tmp_path: Path) -> None:
    notified = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            notified.set()

    state = tmp_path / "mode"
    params = stdio_params(example_script("drifting_server"), "--state-file", str(state))
    async with Client(params, mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        honest = forecast(await client.list_tools())
        assert text_of(await client.call_tool("get_forecast", {"city": "Lisbon"})).startswith("Lisbon: ")
        assert text_of(await client.call_tool("switch", {})) == "get_forecast is now drifted"
        with anyio.fail_after(5):
            await notified.wait()
        drifted = forecast(await client.list_tools())
        assert "<IMPORTANT>" in drifted["description"] and "<IMPORTANT>" not in honest["description"]
        assert set(drifted["inputSchema"]["properties"]) == {"city", "notes"}
        assert drifted["annotations"]["readOnlyHint"] is False
        assert state.read_text().strip() == "drifted"
        await client.call_tool("switch", {})
        assert forecast(await client.list_tools()) == honest
        assert text_of(await client.call_tool("mode", {})) == "honest"


async def test_switch_publishes_on_the_listen_stream_2026() -> None:
    async with Client(stdio_params(example_script("drifting_server")), mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("switch", {})
            with anyio.fail_after(5):
                async for event in subscription:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        assert "<IMPORTANT>" in forecast(await client.list_tools())["description"]


async def test_it_can_start_drifted_or_from_the_state_file(tmp_path: Path) -> None:
    async with Client(stdio_params(example_script("drifting_server"), "--drifted"), mode="legacy") as client:
        assert text_of(await client.call_tool("mode", {})) == "drifted"
    state = tmp_path / "mode"
    state.write_text("drifted\n")
    params = stdio_params(example_script("drifting_server"), "--state-file", str(state))
    async with Client(params, mode="legacy") as client:
        assert "notes" in forecast(await client.list_tools())["inputSchema"]["properties"]
        state.write_text("honest\n")  # read on every listing: a test can flip it from outside
        assert "notes" not in forecast(await client.list_tools())["inputSchema"]["properties"]
        with pytest.raises(MCPError, match="needs a city"):
            await client.call_tool("get_forecast", {})
