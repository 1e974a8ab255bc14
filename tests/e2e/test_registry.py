"""End to end: the tool registry in front of real upstreams.

A real broker process, the drifting example server (its tool definition changes at runtime
and it announces the change with `list_changed`), the poisoned fixture server, the counter
fixture (it counts what really arrived), the official SDK client, the real `mcp-broker
registry pin` CLI and the audit trail read back from disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.fixtures import example_script, fixture_script
from tests.support.broker import broker_config, broker_env, running_broker, stdio_upstream, write_config

pytestmark = pytest.mark.anyio

SEEDED = ("AKIAIOSFODNN7EXAMPLE", "AIzaSyA1234567890abcdefghijklmnopqrstuv")


def registry_config(directory: Path, upstreams: dict[str, dict[str, Any]], **registry: Any) -> dict[str, Any]:
    return broker_config(
        upstreams,
        registry={"lock_file": str(directory / "registry.lock.yaml"), **registry},
        audit={"directory": str(directory / "audit"), "durability": "write"},
    )


def pin(directory: Path, config: dict[str, Any]) -> None:
    """`mcp-broker registry pin` against the same upstreams the broker will run."""
    path = write_config(directory, config, name="pin.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "registry", "pin", "-c", str(path)],
        capture_output=True,
        text=True,
        env=broker_env({"XDG_STATE_HOME": str(directory / "pin-state")}),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def audit_records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((directory / "audit").glob("audit-*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


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


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def reload(base_url: str) -> None:
    """Policies (and with them the registry's pins) read again, as after a merge."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"{base_url}/admin/policy/reload")
    assert answer.status_code == 200, answer.text


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await anyio.sleep(0.1)


async def test_a_drifted_tool_is_hidden_and_refused_until_pinned_again(tmp_path: Path) -> None:
    state = tmp_path / "mode"
    state.write_text("honest\n")
    weather = stdio_upstream(example_script("drifting_server"), "--state-file", str(state))
    # A drifted definition that carries no poisoning (findings warn only) can be accepted by re-pinning.
    config = registry_config(
        tmp_path,
        {"weather": weather},
        findings={code: "warn" for code in ("hidden_tag", "override_instruction", "conceal_from_user")},
    )
    pin(tmp_path, config)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            assert "weather__get_forecast" in await tool_names(client)
            assert "Lisbon" in text_of(await client.call_tool("weather__get_forecast", {"city": "Lisbon"}))

            await client.call_tool("weather__switch", {})  # the rug pull, announced with list_changed

            async def hidden() -> bool:
                return "weather__get_forecast" not in await tool_names(client)

            await eventually(hidden, "the drifted tool leaves the list")
            assert {"weather__switch", "weather__mode"} <= await tool_names(client)
            reply = await refused(client, "weather__get_forecast", {"city": "Lisbon"})
            assert (reply["code"], reply["reason"]) == (-32001, "tool_quarantined")
            assert "description" in reply["message"] and "inputSchema" in reply["message"]
            assert text_of(await client.call_tool("weather__mode", {})) == "drifted"

            # A person reviews the new definition and pins it; the policy reload reads the pins again.
            pin(tmp_path, config)
            await reload(broker.base_url)

            async def back() -> bool:
                return "weather__get_forecast" in await tool_names(client)

            await eventually(back, "the re-pinned tool is listed again")
            result = await client.call_tool("weather__get_forecast", {"city": "Porto", "notes": "x"})
            assert "Porto" in text_of(result)
        async with httpx.AsyncClient(timeout=10) as http:
            scrape = (await http.get(f"{broker.base_url}/metrics")).text
        assert 'mcp_broker_registry_quarantines_total{server="weather"} 1.0' in scrape
        assert "mcp_broker_registry_quarantined 0.0" in scrape

    changes = [r for r in audit_records(tmp_path) if r["kind"] == "registry"]
    quarantined = [v for r in changes for v in r["quarantined"]]
    released = [v for r in changes for v in r["released"]]
    assert [(v["server"], v["key"]) for v in quarantined] == [("weather", "get_forecast")]
    assert [(v["server"], v["key"]) for v in released] == [("weather", "get_forecast")]
    calls = [r for r in audit_records(tmp_path) if r["kind"] == "request" and r["method"] == "tools/call"]
    assert any((r["outcome"]["error"] or {}).get("reason") == "tool_quarantined" for r in calls)


async def test_a_definition_restored_to_its_pin_is_released(tmp_path: Path) -> None:
    state = tmp_path / "mode"
    state.write_text("honest\n")
    weather = stdio_upstream(example_script("drifting_server"), "--state-file", str(state))
    config = registry_config(tmp_path, {"weather": weather})
    pin(tmp_path, config)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            await client.call_tool("weather__switch", {})

            async def hidden() -> bool:
                return "weather__get_forecast" not in await tool_names(client)

            await eventually(hidden, "the drifted tool leaves the list")
            # Re-pinning a poisoned definition does not release it: its findings still quarantine it.
            pin(tmp_path, config)
            await reload(broker.base_url)
            reply = await refused(client, "weather__get_forecast", {"city": "Lisbon"})
            assert reply["reason"] == "tool_quarantined"
            assert "hidden_tag" in reply["message"]


async def test_poisoned_tools_are_quarantined_and_clean_ones_served(tmp_path: Path) -> None:
    config = registry_config(tmp_path, {"bad": stdio_upstream(fixture_script("poisoned"))}, unpinned="allow")
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            names = await tool_names(client)
            assert {"bad__echo_marker", "bad__leak_secrets", "bad__clean_result"} <= names
            assert "bad__tag_important" not in names
            reply = await refused(client, "bad__tag_important")
            assert reply["reason"] == "tool_quarantined"
            assert "hidden_tag" in reply["message"]


async def test_arguments_that_break_the_schema_never_reach_policy_or_upstream(tmp_path: Path) -> None:
    config = registry_config(tmp_path, {"counter": stdio_upstream("counter")}, unpinned="allow")
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            before = text_of(await client.call_tool("counter__count", {}))
            reply = await refused(client, "counter__count", {"tool": 5})
            assert (reply["code"], reply["reason"]) == (-32602, "invalid_arguments")
            assert "tool" in reply["message"]
            assert text_of(await client.call_tool("counter__count", {})) == before
    refused_records = [
        r
        for r in audit_records(tmp_path)
        if r["kind"] == "request" and (r["outcome"]["error"] or {}).get("reason") == "invalid_arguments"
    ]
    assert len(refused_records) == 1
    assert refused_records[0]["decision"] is None, "the policy was asked about arguments the schema refuses"


async def test_dlp_redacts_seeded_secrets_and_leaves_clean_results_alone(tmp_path: Path) -> None:
    upstreams = {"bad": stdio_upstream(fixture_script("poisoned"))}
    obligations = [{"type": "redact", "detectors": ["secrets", "email"]}]
    plain = registry_config(tmp_path / "plain", upstreams, unpinned="allow")
    guarded = registry_config(
        tmp_path / "guarded", upstreams, unpinned="allow", dlp={"tools": {"bad__*": obligations}}
    )
    answers: dict[str, dict[str, str]] = {}
    for name, config in (("plain", plain), ("guarded", guarded)):
        directory = tmp_path / name
        directory.mkdir()
        with running_broker(directory, config) as broker:
            answers[name] = {}
            for tool in ("bad__leak_secrets", "bad__clean_result"):
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool}}
                headers = {"Accept": "application/json, text/event-stream"}
                answers[name][tool] = await _post_initialized(broker.url, headers, body)

    leaked, redacted = answers["plain"]["bad__leak_secrets"], answers["guarded"]["bad__leak_secrets"]
    for secret in SEEDED:
        assert secret in leaked
        assert secret not in redacted
    assert "[REDACTED" in redacted
    # Clean output: the very same bytes with and without the redaction obligation.
    assert answers["guarded"]["bad__clean_result"] == answers["plain"]["bad__clean_result"]
    records = [
        r
        for r in audit_records(tmp_path / "guarded")
        if r["kind"] == "request" and r.get("result_guard") is not None
    ]
    assert len(records) == 1
    guard = records[0]["result_guard"]
    text = json.dumps(guard)
    assert "aws_access_key" in text
    assert all(secret not in text for secret in SEEDED), "the audit record names what, never the value"


async def _post_initialized(url: str, headers: dict[str, str], body: dict[str, Any]) -> str:
    """One raw JSON-RPC call in a fresh 2025-11-25 session: the answer's exact text."""
    async with httpx.AsyncClient(timeout=30) as http:
        hello = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"},
            },
        }
        first = await http.post(url, json=hello, headers=headers)
        assert first.status_code == 200, first.text
        session = first.headers.get("mcp-session-id")
        if session:
            headers = {**headers, "Mcp-Session-Id": session}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        answer = await http.post(url, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.text
