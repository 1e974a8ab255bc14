"""The demo servers (examples/) and the fixture upstreams (tests/fixtures/servers/), run for real.

Each test starts a server as a subprocess (stdio through the SDK client, which stops it on
exit; HTTP through ``running_server``, which terminates it by PID) and talks to it with the
official ``mcp.Client``. ``mode="legacy"`` is the 2025-11-25 handshake; ``"auto"`` gets
2026-07-28 from these SDK 2.x servers.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from tests.fixtures import (
    example_script,
    fixture_script,
    running_server,
    stdio_params,
    stop_process,
)

NOTES = example_script("notes_server")
ECHO = example_script("echo_server")
MODES = ("legacy", "auto")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def hints(tool: types.Tool) -> tuple[bool | None, bool | None, bool | None, bool | None]:
    a = tool.annotations
    assert a is not None, tool.name
    return (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)


# --- examples/notes_server.py ---


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_notes_stdio_tools_annotations_and_calls(mode: str) -> None:
    async with Client(stdio_params(NOTES), mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {
            "list_notes",
            "read_note",
            "search_notes",
            "write_note",
            "delete_note",
            "archive_all",
        }
        # (readOnly, destructive, idempotent, openWorld): what the policy examples key on
        assert hints(tools["list_notes"]) == (True, False, True, False)
        assert hints(tools["read_note"])[0] is True
        assert hints(tools["search_notes"])[0] is True
        assert hints(tools["write_note"]) == (False, False, True, False)
        assert hints(tools["delete_note"])[1] is True
        assert hints(tools["archive_all"])[1] is True

        listed = await client.call_tool("list_notes", {})
        assert listed.structured_content == {"result": ["groceries", "meeting", "welcome"]}
        missing = await client.call_tool("read_note", {"note_id": "nope"})
        assert missing.is_error is True  # a tool error, not a protocol error
        assert "nope" in text_of(missing)
        assert (await client.call_tool("search_notes", {"query": "MILK"})).structured_content == {
            "result": ["groceries"]
        }
        bad_id = await client.call_tool("write_note", {"note_id": "../etc", "text": "x"})
        assert bad_id.is_error is True
        assert not (await client.call_tool("write_note", {"note_id": "todo", "text": "buy milk"})).is_error
        assert text_of(await client.call_tool("read_note", {"note_id": "todo"})) == "buy milk"
        assert not (await client.call_tool("delete_note", {"note_id": "todo"})).is_error
        assert (await client.call_tool("delete_note", {"note_id": "todo"})).is_error is True
        assert text_of(await client.call_tool("archive_all", {})) == "Archived 3 notes."
        assert (await client.call_tool("list_notes", {})).structured_content == {"result": []}


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_notes_resources_prompt_and_completions(mode: str) -> None:
    async with Client(stdio_params(NOTES), mode=mode) as client:
        assert client.server_capabilities.completions is not None
        resources = (await client.list_resources()).resources
        assert [str(r.uri) for r in resources] == ["notes://index"]
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["notes://note/{note_id}"]

        index = (await client.read_resource("notes://index")).contents[0]
        assert isinstance(index, types.TextResourceContents)
        assert [entry["id"] for entry in json.loads(index.text)] == ["groceries", "meeting", "welcome"]
        note = (await client.read_resource("notes://note/groceries")).contents[0]
        assert isinstance(note, types.TextResourceContents)
        assert "coffee" in note.text
        with pytest.raises(MCPError):
            await client.read_resource("notes://note/nope")

        prompt = await client.get_prompt("summarize_note", {"note_id": "meeting"})
        message = prompt.messages[0].content
        assert isinstance(message, types.TextContent)
        assert "approval flow" in message.text

        by_prompt = await client.complete(
            types.PromptReference(type="ref/prompt", name="summarize_note"), {"name": "note_id", "value": "m"}
        )
        assert by_prompt.completion.values == ["meeting"]
        by_template = await client.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="notes://note/{note_id}"),
            {"name": "note_id", "value": ""},
        )
        assert by_template.completion.values == ["groceries", "meeting", "welcome"]


@pytest.mark.anyio
async def test_notes_data_dir_persists_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "notes"
    async with Client(stdio_params(NOTES, "--data-dir", str(data)), mode="legacy") as client:
        await client.call_tool("write_note", {"note_id": "kept", "text": "survives a restart"})
        await client.call_tool("delete_note", {"note_id": "welcome"})
    assert json.loads((data / "kept.json").read_text()) == {"id": "kept", "text": "survives a restart"}
    async with Client(stdio_params(NOTES, "--data-dir", str(data)), mode="legacy") as client:
        listed = await client.call_tool("list_notes", {})
        assert listed.structured_content == {"result": ["groceries", "kept", "meeting"]}
        await client.call_tool("archive_all", {})
    assert sorted(p.name for p in (data / "archive").iterdir()) == [
        "groceries.json",
        "kept.json",
        "meeting.json",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_notes_streamable_http(mode: str) -> None:
    with running_server(NOTES) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url.endswith("/mcp")
        assert f"LISTENING {server.url}" in server.stderr()
        async with Client(server.url, mode=mode) as client:
            assert len((await client.list_tools()).tools) == 6
            assert text_of(await client.call_tool("read_note", {"note_id": "welcome"})).startswith("Welcome")
            assert (await client.call_tool("read_note", {"note_id": "nope"})).is_error is True
        assert "Traceback" not in server.stderr()
        assert "Warning" not in server.stderr()


@pytest.mark.anyio
async def test_notes_legacy_sse() -> None:
    with running_server(NOTES, transport="sse") as server:
        assert server.url.endswith("/sse")
        async with Client(sse_client(server.url), mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            assert text_of(await client.call_tool("read_note", {"note_id": "groceries"})).startswith(
                "Groceries"
            )


# --- examples/echo_server.py ---


@pytest.mark.anyio
@pytest.mark.parametrize("flavor", ["lowlevel", "mcpserver"])
async def test_echo_stdio(flavor: str) -> None:
    async with Client(stdio_params(ECHO, "--flavor", flavor), mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"echo", "add"}
        assert hints(tools["echo"])[0] is True
        assert text_of(await client.call_tool("echo", {"text": "héllo"})) == "héllo"
        assert text_of(await client.call_tool("add", {"a": 2, "b": 40})) == "42"
        assert (await client.call_tool("echo", {"text": 3})).is_error is True


@pytest.mark.anyio
@pytest.mark.parametrize("extra", [["--json-response"], ["--stateless", "--json-response"], ["--stateless"]])
async def test_echo_http_variants(extra: list[str]) -> None:
    with running_server(ECHO, *extra) as server:
        for mode in MODES:
            async with Client(server.url, mode=mode) as client:
                assert text_of(await client.call_tool("echo", {"text": mode})) == mode


@pytest.mark.anyio
async def test_echo_lowlevel_sse() -> None:
    with running_server(ECHO, transport="sse") as server:
        async with Client(sse_client(server.url), mode="legacy") as client:
            assert text_of(await client.call_tool("add", {"a": 1, "b": 1})) == "2"


# --- tests/fixtures/servers/crashy.py ---


@pytest.mark.anyio
async def test_crashy_crash_closes_the_connection_mid_call() -> None:
    async with Client(stdio_params(fixture_script("crashy")), mode="legacy") as client:
        assert text_of(await client.call_tool("ok", {})) == "ok"
        assert int(text_of(await client.call_tool("pid", {}))) > 0
        assert text_of(await client.call_tool("slow", {"seconds": 0.05})) == "slept 0.05"
        with pytest.raises(MCPError) as caught:
            await client.call_tool("crash", {})
        assert caught.value.error.code == types.CONNECTION_CLOSED


@pytest.mark.anyio
async def test_crashy_http_process_exits_with_status_3() -> None:
    with running_server(fixture_script("crashy")) as server:
        async with Client(server.url, mode="legacy") as client:
            with pytest.raises(MCPError), anyio.fail_after(10):
                await client.call_tool("crash", {})
        assert server.process.wait(10) == 3
        assert "crash() called" in server.stderr()


def test_crashy_fail_start_exits_before_speaking_mcp() -> None:
    done = subprocess.run(
        [sys.executable, str(fixture_script("crashy")), "--fail-start"],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"refusing to start" in done.stderr


# --- tests/fixtures/servers/interactive.py ---


class Recorder:
    """Client callbacks that answer the server's requests and remember what arrived."""

    def __init__(self, elicit_action: Literal["accept", "decline", "cancel"] = "accept") -> None:
        self.elicit_action = elicit_action
        self.logs: list[Any] = []
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        if self.elicit_action == "accept":
            return types.ElicitResult(action="accept", content={"name": "Ada"})
        return types.ElicitResult(action=self.elicit_action)

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="It is short."), model="fake-model"
        )

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(
            roots=[types.Root.model_validate({"uri": "file:///work/project", "name": "project"})]
        )

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.data)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    def client(self, mode: str) -> Client:
        return self.client_for(stdio_params(fixture_script("interactive")), mode)

    def client_for(self, target: str | StdioServerParameters, mode: str) -> Client:
        return Client(
            target,
            mode=mode,
            elicitation_callback=self.elicit,
            sampling_callback=self.sample,
            list_roots_callback=self.roots,
            logging_callback=self.log,
            log_level="info",
        )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_interactive_server_to_client_traffic(mode: str) -> None:
    recorder = Recorder()
    async with recorder.client(mode) as client:
        assert text_of(await client.call_tool("ask_name", {})) == "Hello, Ada!"
        assert text_of(await client.call_tool("summarize", {"text": "a long text"})) == "It is short."
        roots = json.loads(text_of(await client.call_tool("roots", {})))
        assert roots == [{"uri": "file:///work/project", "name": "project"}]
        assert text_of(await client.call_tool("log", {"message": "hello log"})) == "logged"
        assert recorder.logs == ["hello log"]
        done = await client.call_tool("progress", {"steps": 3}, progress_callback=recorder.on_progress)
        assert text_of(done) == "done"
        assert [p[0] for p in recorder.progress] == [1, 2, 3]


@pytest.mark.anyio
@pytest.mark.parametrize(("action", "answer"), [("decline", "declined"), ("cancel", "cancelled")])
async def test_interactive_elicitation_refused(action: Literal["decline", "cancel"], answer: str) -> None:
    async with Recorder(elicit_action=action).client("legacy") as client:
        assert text_of(await client.call_tool("ask_name", {})) == answer


@pytest.mark.anyio
async def test_interactive_json_response_has_no_back_channel_on_2025() -> None:
    """Handshake era: a JSON (non-SSE) POST response cannot carry a server-to-client request."""
    recorder = Recorder()
    with running_server(fixture_script("interactive"), "--json-response") as server:
        async with recorder.client_for(server.url, "legacy") as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("ask_name", {})
            assert caught.value.error.code == types.INVALID_REQUEST
        async with recorder.client_for(server.url, "auto") as client:  # 2026-07-28: InputRequiredResult
            assert text_of(await client.call_tool("ask_name", {})) == "Hello, Ada!"
        assert "Traceback" not in server.stderr()


@pytest.mark.anyio
async def test_interactive_missing_capability_is_a_protocol_error() -> None:
    async with Client(stdio_params(fixture_script("interactive")), mode="legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("ask_name", {})
        assert caught.value.error.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY


@pytest.mark.anyio
async def test_interactive_cancellation_is_counted() -> None:
    async with Client(stdio_params(fixture_script("interactive")), mode="legacy") as client:
        with anyio.move_on_after(0.5):
            await client.call_tool("wait_cancel", {"seconds": 30})
        for _ in range(100):  # the server sees notifications/cancelled asynchronously
            if text_of(await client.call_tool("cancelled_count", {})) == "1":
                break
            await anyio.sleep(0.05)
        assert text_of(await client.call_tool("wait_cancel", {"seconds": 0.01})) == "finished"
        assert text_of(await client.call_tool("cancelled_count", {})) == "1"


# --- tests/fixtures/servers/changing.py ---


@pytest.mark.anyio
async def test_changing_flip_notifies_list_changed_legacy() -> None:
    notified = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            notified.set()

    async with Client(
        stdio_params(fixture_script("changing")), mode="legacy", message_handler=on_message
    ) as client:
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed is True
        assert [t.name for t in (await client.list_tools()).tools] == ["flip", "describe_mode"]
        assert text_of(await client.call_tool("flip", {})) == "extra=on"
        with anyio.fail_after(5):
            await notified.wait()
        assert [t.name for t in (await client.list_tools()).tools] == ["flip", "describe_mode", "extra"]
        assert text_of(await client.call_tool("describe_mode", {})) == "variant=base extra=on"
        assert text_of(await client.call_tool("extra", {})) == "extra"
        await client.call_tool("flip", {})
        with pytest.raises(MCPError):
            await client.call_tool("extra", {})


@pytest.mark.anyio
async def test_changing_flip_publishes_on_listen_stream_2026() -> None:
    async with Client(stdio_params(fixture_script("changing")), mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("flip", {})
            with anyio.fail_after(5):
                async for event in subscription:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        assert "extra" in [t.name for t in (await client.list_tools()).tools]


@pytest.mark.anyio
async def test_changing_variants_change_metadata() -> None:
    seen: dict[str, dict[str, Any]] = {}
    for variant in ("base", "drift", "schema", "poisoned"):
        async with Client(
            stdio_params(fixture_script("changing"), "--variant", variant), mode="legacy"
        ) as client:
            seen[variant] = {t.name: dump(t) for t in (await client.list_tools()).tools}
    base = seen["base"]["describe_mode"]
    assert seen["drift"]["describe_mode"]["description"] != base["description"]
    assert seen["drift"]["describe_mode"]["inputSchema"] == base["inputSchema"]
    assert seen["schema"]["describe_mode"]["inputSchema"] != base["inputSchema"]
    assert seen["schema"]["describe_mode"]["description"] == base["description"]
    assert "<IMPORTANT>" in seen["poisoned"]["describe_mode"]["description"]


# --- tests/fixtures/servers/counter.py ---


@pytest.mark.anyio
async def test_counter_counts_calls() -> None:
    async with Client(stdio_params(fixture_script("counter")), mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert hints(tools["hit_destructive"])[1] is True
        assert hints(tools["hit"])[1] is False
        assert text_of(await client.call_tool("count", {})) == "0"
        await client.call_tool("hit", {})
        await client.call_tool("hit", {})
        assert text_of(await client.call_tool("hit_destructive", {})) == "3"
        assert text_of(await client.call_tool("count", {"tool": "hit"})) == "2"
        assert text_of(await client.call_tool("count", {"tool": "hit_destructive"})) == "1"
        assert text_of(await client.call_tool("reset", {})) == "3"
        assert text_of(await client.call_tool("count", {})) == "0"


# --- tests/fixtures/servers/paged.py ---


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_paged_lists_follow_cursors(mode: str) -> None:
    async with Client(stdio_params(fixture_script("paged")), mode=mode) as client:
        names: list[str] = []
        pages = 0
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            pages += 1
            assert len(page.tools) <= 2
            names += [tool.name for tool in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 4
        assert names == [f"tool_{n}" for n in range(1, 8)]

        first = await client.list_resources()
        assert len(first.resources) == 2
        assert first.next_cursor is not None
        rest = await client.list_resources(cursor=first.next_cursor)
        assert [str(r.uri) for r in rest.resources] == ["paged://item/3", "paged://item/4"]
        assert (await client.list_prompts()).next_cursor is not None
        assert (await client.list_resource_templates()).next_cursor is not None
        with pytest.raises(MCPError) as caught:
            await client.list_prompts(cursor=first.next_cursor)  # a resources cursor
        assert caught.value.error.code == types.INVALID_PARAMS
        assert text_of(await client.call_tool("tool_7", {})) == "tool_7"


# --- tests/fixtures/servers/big.py ---


@pytest.mark.anyio
async def test_big_results_are_exact() -> None:
    async with Client(stdio_params(fixture_script("big")), mode="legacy") as client:
        large = await client.call_tool("big_text", {"size": 3_000_000})
        assert len(large.content) == 1
        assert large.structured_content is None
        assert len(text_of(large).encode()) == 3_000_000

        failed = await client.call_tool("structured_error", {})
        assert failed.is_error is True
        assert failed.structured_content == {
            "error": "quota_exceeded",
            "retryAfterSeconds": 30,
            "limits": {"daily": 100},
        }
        assert dump(failed)["_meta"] == {"fixture.example/kind": "structured_error"}

        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["structured"].output_schema is not None
        report = await client.call_tool("structured", {"count": 2})
        assert report.structured_content == {"count": 2, "items": ["item-0", "item-1"], "ok": True}

        image = (await client.call_tool("image", {"width": 3, "height": 2})).content[0]
        assert isinstance(image, types.ImageContent)
        assert image.mime_type == "image/png"
        png = base64.b64decode(image.data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert struct.unpack(">II", png[16:24]) == (3, 2)  # IHDR width, height

        mixed = await client.call_tool("mixed", {})
        assert [block.type for block in mixed.content] == [
            "text",
            "image",
            "audio",
            "resource",
            "resource_link",
        ]
        assert "\U0001f680" in text_of(mixed)


# --- shared runner, flags ---


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_non_loopback_host_is_refused(host: str) -> None:
    process = subprocess.Popen(
        [sys.executable, str(ECHO), "--transport", "http", "--host", host, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 2
        assert b"not a loopback address" in stderr
    finally:
        stop_process(process)
