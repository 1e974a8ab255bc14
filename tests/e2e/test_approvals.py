"""End to end: require-approval holds the exact call until an authorised human decides.

A real broker (test policies in tests/support/policies/approvals: destructive tools need an
approval, role `approver` approves, role `self-approver` may approve its own calls), real
upstreams (the counter fixture, the notes example), callers authenticated with API keys
through the official SDK client, approvers through the HTTP API and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.fixtures import REPO_ROOT
from tests.support.broker import BrokerProcess, broker_config, broker_env, running_broker, stdio_upstream
from tests.support.tokens import bearer_client

POLICIES = Path(__file__).resolve().parents[1] / "support" / "policies" / "approvals"
NOTES = REPO_ROOT / "examples" / "notes_server.py"
PEOPLE = {
    "alice": ["engineer", "approver"],  # an approver, but never of her own calls
    "bob": ["approver"],
    "carol": [],
    "dave": ["self-approver"],
}
KEYS = {name: f"mcpb_{name}-test-key-0123456789" for name in PEOPLE}


def identity() -> dict[str, Any]:
    keys = [
        {"sha256": api_key_digest(KEYS[name]), "principal": {"type": "User", "id": name, "roles": roles}}
        for name, roles in PEOPLE.items()
    ]
    return {"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}}


def approvals_config(tmp: Path, policies: Path = POLICIES, **approvals: Any) -> dict[str, Any]:
    return broker_config(
        {"counter": stdio_upstream("counter"), "notes": stdio_upstream(NOTES)},
        policy={"path": str(policies), "watch": False},
        identity=identity(),
        approvals={"path": str(tmp / "approvals.db"), "timeout": 60, "progress_interval": 0.3, **approvals},
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("approvals")
    with running_broker(directory, approvals_config(directory)) as process:
        yield process


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def api(
    broker: BrokerProcess, who: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS[who]}"} if who else {}
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.request(method, broker.base_url + path, headers=headers, json=body)


async def pending(
    broker: BrokerProcess, target: str, *, who: str = "bob", seconds: float = 20
) -> dict[str, Any]:
    """The pending approval for `target` (the caller's call is waiting on it meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await api(broker, who, "GET", "/approvals?status=pending")
        assert response.status_code == 200, response.text
        found = [a for a in response.json()["approvals"] if a["target"] == target]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {target} within {seconds} s")


async def until(condition: Any, seconds: float = 10) -> None:
    """Poll a condition (bounded): for things that happen in another process."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


async def count(client: Client, tool: str = "hit_destructive") -> int:
    return int(text(await client.call_tool("counter__count", {"tool": tool})))


@asynccontextmanager
async def caller(
    broker: BrokerProcess, who: str, mode: str = "legacy", **options: Any
) -> AsyncIterator[Client]:
    async with bearer_client(broker.url, KEYS[who], mode=mode, **options) as client:
        yield client


# -- an approver decides through the API ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_waiting_call_completes_with_the_upstreams_result_after_an_api_approval(
    broker: BrokerProcess, mode: str
) -> None:
    async with caller(broker, "alice", mode) as alice:
        before = await count(alice)
        call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        approval = await pending(broker, "counter__hit_destructive")
        assert approval["requester"]["id"] == "alice"
        assert approval["reasons"] == [
            {"id": "destructive-needs-approval", "message": "destructive tools need a human approval"}
        ]
        assert approval["argument_digest"] and approval["policy_version"].startswith(("sha256:", "git:"))
        assert not call.done()
        assert await count(alice) == before, "the call reached the upstream before the approval"
        approved = await api(broker, "bob", "POST", f"/approvals/{approval['id']}/approve", {"note": "fine"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["approver"]["id"] == "bob"
        result = await asyncio.wait_for(call, 15)
        assert not result.is_error
        assert await count(alice) == before + 1
    shown = (await api(broker, "bob", "GET", f"/approvals/{approval['id']}")).json()
    assert shown["status"] == "approved" and shown["used_at"] is not None and shown["note"] == "fine"


@pytest.mark.anyio
async def test_the_cli_lists_and_approves(broker: BrokerProcess) -> None:
    env = broker_env({"MCP_BROKER_TOKEN": KEYS["bob"]})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker.cli", "approvals", *args, "--url", broker.base_url],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )

    async with caller(broker, "alice") as alice:
        before = await count(alice)
        call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        approval = await pending(broker, "counter__hit_destructive")
        listed = await asyncio.to_thread(cli, "list")
        assert listed.returncode == 0, listed.stderr
        assert approval["id"] in listed.stdout and "alice" in listed.stdout
        shown = await asyncio.to_thread(cli, "show", approval["id"])
        assert "destructive tools need a human approval" in shown.stdout
        done = await asyncio.to_thread(cli, "approve", approval["id"], "--note", "via cli")
        assert done.returncode == 0, done.stderr
        assert "approved" in done.stdout
        await asyncio.wait_for(call, 15)
        assert await count(alice) == before + 1
        again = await asyncio.to_thread(cli, "approve", approval["id"])
        assert again.returncode == 1 and "already approved" in again.stderr


# -- who may decide -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_separation_of_duties_and_roles_then_a_denial(broker: BrokerProcess) -> None:
    async with caller(broker, "alice") as alice:
        before = await count(alice)
        call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        approval = await pending(broker, "counter__hit_destructive")
        own = await api(broker, "alice", "POST", f"/approvals/{approval['id']}/approve")
        assert own.status_code == 403
        assert "separation of duties" in own.json()["error"]
        no_role = await api(broker, "carol", "POST", f"/approvals/{approval['id']}/approve")
        assert no_role.status_code == 403
        assert "may not decide this approval" in no_role.json()["error"]
        assert (await api(broker, "carol", "GET", f"/approvals/{approval['id']}")).status_code == 404
        assert (await api(broker, None, "GET", "/approvals")).status_code == 401
        denied = await api(broker, "bob", "POST", f"/approvals/{approval['id']}/deny", {"note": "not today"})
        assert denied.status_code == 200
        with pytest.raises(MCPError) as caught:
            await asyncio.wait_for(call, 15)
        assert caught.value.error.data["reason"] == "approval_denied"
        assert caught.value.error.data["approver"] == "bob"
        assert "not today" in caught.value.error.message
        assert await count(alice) == before


@pytest.mark.anyio
async def test_an_approval_covers_only_its_arguments_and_only_once(broker: BrokerProcess) -> None:
    async with caller(broker, "alice") as alice:
        for note in ("a", "b"):
            await alice.call_tool("notes__write_note", {"note_id": note, "text": note})
        first = asyncio.create_task(alice.call_tool("notes__delete_note", {"note_id": "a"}))
        approval_a = await pending(broker, "notes__delete_note")
        await api(broker, "bob", "POST", f"/approvals/{approval_a['id']}/approve")
        await asyncio.wait_for(first, 15)
        other = asyncio.create_task(alice.call_tool("notes__delete_note", {"note_id": "b"}))
        approval_b = await pending(broker, "notes__delete_note")
        assert approval_b["id"] != approval_a["id"], "arguments B reused the approval of arguments A"
        assert approval_b["argument_digest"] != approval_a["argument_digest"]
        await api(broker, "bob", "POST", f"/approvals/{approval_b['id']}/deny")
        with pytest.raises(MCPError):
            await asyncio.wait_for(other, 15)
        assert "b" in text(await alice.call_tool("notes__list_notes", {}))
        again = asyncio.create_task(alice.call_tool("notes__delete_note", {"note_id": "a"}))
        approval_again = await pending(broker, "notes__delete_note")
        assert approval_again["id"] != approval_a["id"], "a single-use approval was used twice"
        await api(broker, "bob", "POST", f"/approvals/{approval_again['id']}/deny")
        with pytest.raises(MCPError):
            await asyncio.wait_for(again, 15)


# -- self-approval through the caller's client -------------------------------------------------


class Answers:
    """The caller's elicitation callback: answers the approval question as told, records it."""

    def __init__(self, action: str, approve: bool = True) -> None:
        self.action = action
        self.approve = approve
        self.asked: list[str] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append(params.message)
        if self.action == "accept":
            return types.ElicitResult(action="accept", content={"approve": self.approve})
        return types.ElicitResult(action=self.action)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize(
    ("action", "approve", "reason"),
    [
        ("accept", True, None),
        ("accept", False, "approval_denied"),
        ("decline", True, "approval_denied"),
        ("cancel", True, "approval_cancelled"),
    ],
)
async def test_a_self_approver_is_asked_through_elicitation(
    broker: BrokerProcess, mode: str, action: str, approve: bool, reason: str | None
) -> None:
    answers = Answers(action, approve)
    async with caller(broker, "dave", mode, elicitation_callback=answers) as dave:
        before = await count(dave)
        if reason is None:
            result = await dave.call_tool("counter__hit_destructive", {})
            assert not result.is_error
            assert await count(dave) == before + 1
        else:
            with pytest.raises(MCPError) as caught:
                await dave.call_tool("counter__hit_destructive", {})
            assert caught.value.error.data["reason"] == reason
            assert await count(dave) == before
    assert len(answers.asked) == 1
    assert "counter__hit_destructive" in answers.asked[0]
    assert "destructive tools need a human approval" in answers.asked[0]


@pytest.mark.anyio
async def test_without_self_approval_the_caller_is_not_asked_but_waits(broker: BrokerProcess) -> None:
    answers = Answers("accept")
    async with caller(broker, "alice", elicitation_callback=answers) as alice:
        call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        approval = await pending(broker, "counter__hit_destructive")
        await api(broker, "bob", "POST", f"/approvals/{approval['id']}/approve")
        await asyncio.wait_for(call, 15)
    assert answers.asked == [], "a caller without self_approve was asked to approve its own call"


def stateless_call(url: str, request_id: int, params: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    headers = {
        "Authorization": f"Bearer {KEYS['dave']}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": params["name"],
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {**params, "_meta": meta}}
    reply: dict[str, Any] = httpx.post(url, json=body, headers=headers, timeout=20).json()
    return reply


def test_the_approval_request_state_cannot_be_forged_or_replayed(broker: BrokerProcess) -> None:
    ask = {"name": "counter__hit_destructive", "arguments": {}}
    first = stateless_call(broker.url, 1, ask)["result"]
    assert first["resultType"] == "input_required"
    ((key, question),) = first["inputRequests"].items()
    assert question["method"] == "elicitation/create"
    assert "counter__hit_destructive" in question["params"]["message"]
    state = first["requestState"]
    answer = {key: {"action": "accept", "content": {"approve": True}}}
    forged = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    refused = stateless_call(broker.url, 2, {**ask, "inputResponses": answer, "requestState": forged})
    assert refused["error"]["code"] == types.INVALID_PARAMS
    other = {"name": "counter__hit_destructive", "arguments": {"x": 1}, "inputResponses": answer}
    refused = stateless_call(broker.url, 3, {**other, "requestState": state})
    assert "does not match this request" in refused["error"]["message"]
    done = stateless_call(broker.url, 4, {**ask, "inputResponses": answer, "requestState": state})
    assert "result" in done and not done["result"].get("isError"), done
    replayed = stateless_call(broker.url, 5, {**ask, "inputResponses": answer, "requestState": state})
    assert replayed["error"]["code"] == types.INVALID_PARAMS


# -- while waiting: progress, cancellation, disconnect -------------------------------------------


@pytest.mark.anyio
async def test_a_waiting_caller_gets_progress_and_its_cancel_ends_the_approval(broker: BrokerProcess) -> None:
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with caller(broker, "alice") as alice:
        call = asyncio.create_task(
            alice.call_tool("counter__hit_destructive", {}, progress_callback=on_progress)
        )
        approval = await pending(broker, "counter__hit_destructive")
        await until(lambda: len(messages) >= 2)
        assert len(messages) >= 2 and approval["id"] in messages[0], messages
        call.cancel()  # the SDK sends notifications/cancelled
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = (await api(broker, "bob", "GET", f"/approvals/{approval['id']}")).json()
            if shown["status"] != "pending":
                break
            await asyncio.sleep(0.1)
        assert shown["status"] == "cancelled", shown
        assert "cancelled" in shown["note"]
        late = await api(broker, "bob", "POST", f"/approvals/{approval['id']}/approve")
        assert late.status_code == 409


@pytest.mark.anyio
async def test_a_caller_that_disconnects_ends_its_approval(broker: BrokerProcess) -> None:
    headers = {
        "Authorization": f"Bearer {KEYS['alice']}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with httpx.AsyncClient(timeout=15) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        response = await http.post(broker.url, json=init, headers=headers)
        session_id = response.headers["mcp-session-id"]
        headers["Mcp-Session-Id"] = session_id
        await http.post(
            broker.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
        )
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "counter__hit_destructive"},
        }
        request = asyncio.create_task(http.post(broker.url, json=call, headers=headers))
        approval = await pending(broker, "counter__hit_destructive")
        request.cancel()  # closes the connection of the waiting POST
        with pytest.raises(asyncio.CancelledError):
            await request
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = (await api(broker, "bob", "GET", f"/approvals/{approval['id']}")).json()
        if shown["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert shown["status"] == "cancelled" and "disconnected" in shown["note"], shown


# -- time limits, restarts, policy changes, webhooks (each its own broker) --------------------------


@pytest.mark.anyio
async def test_nobody_deciding_in_time_denies(tmp_path: Path) -> None:
    with running_broker(tmp_path, approvals_config(tmp_path, timeout=1.5)) as short:
        async with caller(short, "alice") as alice:
            before = await count(alice)
            with pytest.raises(MCPError) as caught:
                await alice.call_tool("counter__hit_destructive", {})
            assert caught.value.error.data["reason"] == "approval_expired"
            assert await count(alice) == before
        listed = (await api(short, "bob", "GET", "/approvals?status=expired")).json()["approvals"]
        assert [a["target"] for a in listed] == ["counter__hit_destructive"]


@pytest.mark.anyio
async def test_an_approval_survives_a_restart_and_the_identical_retry_uses_it(tmp_path: Path) -> None:
    config = approvals_config(tmp_path)
    with running_broker(tmp_path, config) as first:
        client = caller(first, "alice")
        alice = await client.__aenter__()
        waiting = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
        approval = await pending(first, "counter__hit_destructive")
        os.kill(first.pid, signal.SIGTERM)  # the broker stops while the call waits
        with pytest.raises(MCPError) as caught:
            await asyncio.wait_for(waiting, 20)
        assert caught.value.error.data["reason"] == "approval_cancelled"
        assert "send the same call again" in caught.value.error.message
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)
    with running_broker(tmp_path, config) as second:
        kept = (await api(second, "bob", "GET", f"/approvals/{approval['id']}")).json()
        assert kept["status"] == "pending", kept
        assert (await api(second, "bob", "POST", f"/approvals/{approval['id']}/approve")).status_code == 200
        async with caller(second, "alice") as alice:
            before = await count(alice)
            result = await asyncio.wait_for(alice.call_tool("counter__hit_destructive", {}), 15)
            assert not result.is_error
            assert await count(alice) == before + 1
            assert (await api(second, "bob", "GET", "/approvals?status=pending")).json()["approvals"] == []
            other = asyncio.create_task(alice.call_tool("notes__delete_note", {"note_id": "welcome"}))
            fresh = await pending(second, "notes__delete_note")
            assert fresh["id"] != approval["id"], "a retry with other arguments is a new request"
            await api(second, "bob", "POST", f"/approvals/{fresh['id']}/deny")
            with pytest.raises(MCPError):
                await asyncio.wait_for(other, 15)


@pytest.mark.anyio
async def test_a_policy_change_while_waiting_is_honoured(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    with running_broker(tmp_path, approvals_config(tmp_path, policies)) as process:
        async with caller(process, "alice") as alice:
            before = await count(alice)
            call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
            approval = await pending(process, "counter__hit_destructive")
            (policies / "cedar" / "freeze.cedar").write_text(
                '@id("change-freeze")\n@reason("a change freeze is in force")\n'
                'forbid (principal, action == Mcp::Action::"call_tool", resource)\n'
                "when { resource.destructiveHint };\n"
            )
            async with httpx.AsyncClient(timeout=15) as http:
                reloaded = await http.post(process.base_url + "/admin/policy/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert (
                await api(process, "bob", "POST", f"/approvals/{approval['id']}/approve")
            ).status_code == 200
            with pytest.raises(MCPError) as caught:
                await asyncio.wait_for(call, 15)
            assert caught.value.error.data["reason"] == "policy_denied"
            assert "change-freeze" in caught.value.error.data["policies"]
            assert await count(alice) == before


class Recorder(BaseHTTPRequestHandler):
    posts: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).posts.append({"headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.mark.anyio
async def test_each_new_pending_approval_is_posted_to_the_webhook(tmp_path: Path) -> None:
    Recorder.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook = {
            "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
            "headers": {"X-Hook-Token": {"env": "HOOK_TOKEN"}},
        }
        config = approvals_config(tmp_path, webhook=hook)
        with running_broker(tmp_path, config, env={"HOOK_TOKEN": "hook-secret"}) as process:
            async with caller(process, "alice") as alice:
                call = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
                approval = await pending(process, "counter__hit_destructive")
                await until(lambda: bool(Recorder.posts))
                await api(process, "bob", "POST", f"/approvals/{approval['id']}/deny")
                with pytest.raises(MCPError):
                    await asyncio.wait_for(call, 15)
    finally:
        server.shutdown()
        server.server_close()
    (post,) = Recorder.posts
    assert post["headers"]["X-Hook-Token"] == "hook-secret"
    assert approval["id"] in post["body"]["text"] and "counter__hit_destructive" in post["body"]["text"]
    assert post["body"]["approval"]["id"] == approval["id"]
