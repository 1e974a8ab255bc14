"""End to end: the official SDK client through the real broker to real upstream servers.

Fidelity (what comes back is what the upstream said), namespacing, aggregation,
pagination, and the traffic an upstream sends on its own (progress, logs,
elicitation, sampling, roots, list changes), in both protocol eras.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.shared.exceptions import MCPError

from tests.fixtures import example_script, fixture_script, running_server, stdio_params
from tests.support.broker import BrokerProcess, broker_config, http_upstream, running_broker, stdio_upstream

MODES = ["legacy", "auto"]


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def demo(module_tmp: Path) -> Iterator[BrokerProcess]:
    """One broker for the read-only tests: notes (namespaced), big and paged fixtures."""
    config = broker_config(
        {
            "notes": stdio_upstream(example_script("notes_server")),
            "big": stdio_upstream("big.py", namespace=False),
            "paged": stdio_upstream("paged.py"),
        },
        catalog={"page_size": 4},
    )
    with running_broker(module_tmp, config) as broker:
        yield broker


async def all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(50):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise AssertionError("pagination did not end")


# -- catalog, namespacing, pagination ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_aggregated_namespaced_and_keep_their_annotations(
    demo: BrokerProcess, mode: str
) -> None:
    async with Client(stdio_params(example_script("notes_server")), mode="legacy") as direct:
        upstream = {t.name: dump(t) for t in (await direct.list_tools()).tools}
    async with Client(demo.url, mode=mode) as client:
        tools = {t.name: dump(t) for t in await all_tools(client)}
    for name, definition in upstream.items():
        assert tools[f"notes__{name}"] == {**definition, "name": f"notes__{name}"}
    assert tools["notes__delete_note"]["annotations"]["destructiveHint"] is True
    assert tools["notes__read_note"]["annotations"]["readOnlyHint"] is True
    assert "big_text" in tools  # namespace: false keeps the upstream's own names
    assert sum(1 for n in tools if n.startswith("paged__")) == 7  # every upstream page was followed


@pytest.mark.anyio
async def test_lists_are_paginated_with_the_configured_page_size(demo: BrokerProcess) -> None:
    async with Client(demo.url, mode="legacy") as client:
        first = await client.list_tools()
        assert len(first.tools) == 4
        assert first.next_cursor
        with pytest.raises(MCPError) as caught:
            await client.list_tools(cursor="not-a-cursor")
        assert caught.value.error.code == types.INVALID_PARAMS


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_calls_resources_prompts_and_completions_reach_the_right_upstream(
    demo: BrokerProcess, mode: str
) -> None:
    async with Client(demo.url, mode=mode) as client:
        listed = await client.call_tool("notes__list_notes", {})
        assert listed.structured_content is not None
        note_id = listed.structured_content["result"][0]
        read = await client.call_tool("notes__read_note", {"note_id": note_id})
        assert not read.is_error
        missing = await client.call_tool("notes__read_note", {"note_id": "no-such-note"})
        assert missing.is_error  # the upstream's own tool error passes through as a result

        resources = (await client.list_resources()).resources
        assert "notes+notes://index" in [str(r.uri) for r in resources]
        index = await client.read_resource("notes+notes://index")
        assert str(index.contents[0].uri) == "notes+notes://index"
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert "notes+notes://note/{note_id}" in templates
        note = await client.read_resource(f"notes+notes://note/{note_id}")
        assert str(note.contents[0].uri) == f"notes+notes://note/{note_id}"

        prompts = [p.name for p in (await client.list_prompts()).prompts]
        assert "notes__summarize_note" in prompts
        prompt = await client.get_prompt("notes__summarize_note", {"note_id": note_id})
        assert prompt.messages

        ref = types.PromptReference(type="ref/prompt", name="notes__summarize_note")
        completion = await client.complete(ref, {"name": "note_id", "value": ""})
        assert note_id in completion.completion.values
        template_ref = types.ResourceTemplateReference(
            type="ref/resource", uri="notes+notes://note/{note_id}"
        )
        completion = await client.complete(template_ref, {"name": "note_id", "value": ""})
        assert note_id in completion.completion.values


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_results_pass_through_unchanged(demo: BrokerProcess, mode: str) -> None:
    """Same call, direct and through the broker: identical content, structuredContent, isError, _meta."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("big_text", {"size": 1_000_000}),
        ("structured_error", {}),
        ("structured", {"count": 3}),
        ("image", {"w": 8, "h": 8}),
        ("mixed", {}),
    ]
    async with (
        Client(stdio_params(fixture_script("big")), mode=mode) as direct,
        Client(demo.url, mode=mode) as proxied,
    ):
        for name, args in calls:
            want = dump(await direct.call_tool(name, args))
            got = dump(await proxied.call_tool(name, args))
            for side in (want, got):  # the server identifies itself in 2026-07-28 results
                side.get("_meta", {}).pop("io.modelcontextprotocol/serverInfo", None)
                if not side.get("_meta"):
                    side.pop("_meta", None)
            assert got == want, name


# -- traffic the upstream sends on its own ------------------------------------------------------


class Recorder:
    """Client callbacks that answer an upstream's requests (relayed by the broker) and record them."""

    def __init__(self, elicit: Literal["accept", "decline", "cancel"] = "accept") -> None:
        self.elicit_action = elicit
        self.logs: list[Any] = []
        self.progress: list[float] = []
        self.messages: list[Any] = []

    async def elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
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
            roots=[types.Root.model_validate({"uri": "file:///work/p", "name": "p"})]
        )

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.data)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(progress)

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    def client(self, url: str, mode: str) -> Client:
        return Client(
            url,
            mode=mode,
            elicitation_callback=self.elicit,
            sampling_callback=self.sample,
            list_roots_callback=self.roots,
            logging_callback=self.log,
            message_handler=self.on_message,
        )


@pytest.fixture(scope="module")
def interactive(module_tmp: Path) -> Iterator[BrokerProcess]:
    directory = module_tmp / "interactive"
    directory.mkdir()
    config = broker_config(
        {
            "shared": stdio_upstream("interactive.py", relay_roots=True),
            "isolated": stdio_upstream("interactive.py", isolation="per_session", relay_roots=True),
            "closed": stdio_upstream("interactive.py", isolation="per_session"),
        }
    )
    with running_broker(directory, config) as broker:
        yield broker


@pytest.mark.anyio
@pytest.mark.parametrize("upstream", ["shared", "isolated"])
async def test_elicitation_sampling_roots_logs_and_progress_reach_the_caller(
    interactive: BrokerProcess, upstream: str
) -> None:
    recorder = Recorder()
    async with recorder.client(interactive.url, "legacy") as client:
        assert text_of(await client.call_tool(f"{upstream}__ask_name", {})) == "Hello, Ada!"
        assert text_of(await client.call_tool(f"{upstream}__summarize", {"text": "long"})) == "It is short."
        roots = json.loads(text_of(await client.call_tool(f"{upstream}__roots", {})))
        assert roots == [{"uri": "file:///work/p", "name": "p"}]
        await client.set_logging_level("info")
        assert text_of(await client.call_tool(f"{upstream}__log", {"message": "hello log"})) == "logged"
        assert recorder.logs == ["hello log"]
        done = await client.call_tool(
            f"{upstream}__progress", {"steps": 3}, progress_callback=recorder.on_progress
        )
        assert text_of(done) == "done"
        assert recorder.progress == [1, 2, 3]


@pytest.mark.anyio
@pytest.mark.parametrize(("action", "answer"), [("decline", "declined"), ("cancel", "cancelled")])
async def test_elicitation_refusals_are_relayed(
    interactive: BrokerProcess, action: Literal["decline", "cancel"], answer: str
) -> None:
    async with Recorder(elicit=action).client(interactive.url, "legacy") as client:
        assert text_of(await client.call_tool("isolated__ask_name", {})) == answer


@pytest.mark.anyio
async def test_roots_are_not_relayed_unless_the_upstream_is_configured_to(interactive: BrokerProcess) -> None:
    """Some servers adopt the caller's roots as their sandbox: an agent must not widen it by default."""
    recorder = Recorder()
    async with recorder.client(interactive.url, "legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("closed__roots", {})
        assert "roots" in caught.value.error.message.lower()
        assert (
            text_of(await client.call_tool("closed__ask_name", {})) == "Hello, Ada!"
        )  # the rest still works


@pytest.mark.anyio
@pytest.mark.parametrize("upstream", ["shared", "isolated"])
async def test_an_upstreams_questions_reach_a_stateless_caller_as_input_required_rounds(
    interactive: BrokerProcess, upstream: str
) -> None:
    """2026-07-28 callers cannot be sent requests: the broker parks the call and asks with input rounds."""
    recorder = Recorder()
    async with recorder.client(interactive.url, "auto") as client:
        assert client.protocol_version == "2026-07-28"
        assert text_of(await client.call_tool(f"{upstream}__ask_name", {})) == "Hello, Ada!"
        assert text_of(await client.call_tool(f"{upstream}__summarize", {"text": "long"})) == "It is short."
        roots = json.loads(text_of(await client.call_tool(f"{upstream}__roots", {})))
        assert roots == [{"uri": "file:///work/p", "name": "p"}]
    async with Recorder(elicit="decline").client(interactive.url, "auto") as client:
        assert text_of(await client.call_tool(f"{upstream}__ask_name", {})) == "declined"


def stateless_post(url: str, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
    }
    if "name" in params:
        headers["Mcp-Name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}
    response = httpx.post(url, json=body, headers=headers, timeout=20)
    reply: dict[str, Any] = response.json()
    return reply


def test_request_state_is_bound_to_the_call_and_used_once(interactive: BrokerProcess) -> None:
    ask = {"name": "shared__ask_name", "arguments": {}}
    first = stateless_post(interactive.url, 1, "tools/call", ask)["result"]
    assert first["resultType"] == "input_required"
    ((key, question),) = first["inputRequests"].items()
    assert question["method"] == "elicitation/create"
    state = first["requestState"]
    answer = {key: {"action": "accept", "content": {"name": "Grace"}}}

    other_args = {
        "name": "shared__ask_name",
        "arguments": {"x": 1},
        "inputResponses": answer,
        "requestState": state,
    }
    refused = stateless_post(interactive.url, 2, "tools/call", other_args)
    assert refused["error"]["code"] == types.INVALID_PARAMS
    assert "does not match this request" in refused["error"]["message"]

    forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    refused = stateless_post(
        interactive.url, 3, "tools/call", {**ask, "inputResponses": answer, "requestState": forged}
    )
    assert "does not match this request" in refused["error"]["message"]

    done = stateless_post(
        interactive.url, 4, "tools/call", {**ask, "inputResponses": answer, "requestState": state}
    )
    assert done["result"]["content"][0]["text"] == "Hello, Grace!"

    replayed = stateless_post(
        interactive.url, 5, "tools/call", {**ask, "inputResponses": answer, "requestState": state}
    )
    assert replayed["error"]["code"] == types.INVALID_PARAMS
    assert "unknown or expired" in replayed["error"]["message"]


@pytest.mark.anyio
async def test_progress_is_relayed_in_the_stateless_era(interactive: BrokerProcess) -> None:
    recorder = Recorder()
    async with recorder.client(interactive.url, "auto") as client:
        assert client.protocol_version == "2026-07-28"
        done = await client.call_tool(
            "shared__progress", {"steps": 2}, progress_callback=recorder.on_progress
        )
        assert text_of(done) == "done"
        assert recorder.progress == [1, 2]


@pytest.mark.anyio
async def test_a_caller_without_the_capability_gets_an_error_not_a_hang(interactive: BrokerProcess) -> None:
    async with Client(interactive.url, mode="legacy") as client:  # declares no elicitation capability
        with anyio.fail_after(20), pytest.raises(MCPError) as caught:
            await client.call_tool("isolated__ask_name", {})
        assert "did not declare the elicitation capability" in caught.value.error.message


@pytest.mark.anyio
async def test_cancellation_reaches_the_upstream(interactive: BrokerProcess) -> None:
    async with Client(interactive.url, mode="legacy") as client:
        before = int(text_of(await client.call_tool("shared__cancelled_count", {})))
        with anyio.move_on_after(0.5):
            await client.call_tool("shared__wait_cancel", {"seconds": 30})
        for _ in range(100):
            if int(text_of(await client.call_tool("shared__cancelled_count", {}))) == before + 1:
                break
            await anyio.sleep(0.05)
        assert int(text_of(await client.call_tool("shared__cancelled_count", {}))) == before + 1
        assert text_of(await client.call_tool("shared__wait_cancel", {"seconds": 0.01})) == "finished"


# -- list changes ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_changed_refreshes_the_catalog_and_notifies_callers(tmp_path: Path) -> None:
    config = broker_config({"changing": stdio_upstream("changing.py")})
    with running_broker(tmp_path, config) as broker:
        notified = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                notified.set()

        async with Client(broker.url, mode="legacy", message_handler=on_message) as watcher:
            await anyio.sleep(0.3)  # let the client open its GET stream
            names = [t.name for t in (await watcher.list_tools()).tools]
            assert "changing__extra" not in names
            async with Client(broker.url, mode="auto") as modern:
                async with modern.listen(tools_list_changed=True) as subscription:
                    assert text_of(await watcher.call_tool("changing__flip", {})) == "extra=on"
                    with anyio.fail_after(10):
                        await notified.wait()
                        async for event in subscription:
                            assert type(event).__name__ == "ToolsListChanged"
                            break
                assert "changing__extra" in [t.name for t in (await modern.list_tools()).tools]
            assert text_of(await watcher.call_tool("changing__extra", {})) == "extra"


# -- other upstream transports ----------------------------------------------------------------------


@pytest.fixture
async def notes_over_http() -> AsyncIterator[tuple[str, str]]:
    with (
        running_server(example_script("notes_server"), transport="http") as http,
        running_server(example_script("notes_server"), transport="sse") as sse,
    ):
        yield http.url, sse.url


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_streamable_http_and_legacy_sse_upstreams(
    tmp_path: Path, notes_over_http: tuple[str, str], mode: str
) -> None:
    http_url, sse_url = notes_over_http
    config = broker_config(
        {
            "web": http_upstream(http_url),
            "old": {"transport": "sse", "url": sse_url},
        }
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"web__read_note", "old__read_note"} <= names
            for prefix in ("web", "old"):
                listed = await client.call_tool(f"{prefix}__list_notes", {})
                assert not listed.is_error
                index = await client.read_resource(f"{prefix}+notes://index")
                assert index.contents
