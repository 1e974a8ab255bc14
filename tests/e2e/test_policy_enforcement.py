"""End to end: no request reaches an upstream without the policy's allow, with both engines.

Real broker process, real upstreams (the counter fixture counts what really arrived;
the npm filesystem server holds real files), the repository's policies or small test
policies, the official SDK client.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.support.broker import (
    NODE22,
    SERVER_FILESYSTEM_JS,
    broker_config,
    command_upstream,
    running_broker,
    stdio_upstream,
)
from tests.support.opa import opa_binary

REPO = Path(__file__).resolve().parents[2]
ENGINES = ["cedar", "opa"]


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def policy_section(engine: str, directory: Path, **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"engine": engine, "path": str(directory), "watch": False, **extra}
    if engine == "opa":
        section["opa"] = {"binary": str(opa_binary()), "timeout_ms": 500}
    return section


def repo_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    return target


def principal(*roles: str) -> dict[str, Any]:
    return {"default_principal": {"type": "User", "id": "alice", "roles": list(roles)}}


async def hits(client: Client) -> int:
    return int(text_of(await client.call_tool("counter__count", {})))


async def denied(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(MCPError) as caught:
        await client.call_tool(tool, arguments or {})
    error = caught.value.error
    assert error.code == -32001, error
    data = error.data if isinstance(error.data, dict) else {}
    return {"message": error.message, **data}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_a_viewer_sees_and_uses_only_read_only_tools(tmp_path: Path, engine: str) -> None:
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        policy=policy_section(engine, repo_policies(tmp_path)),
        identity=principal(),
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["counter__count"]
            before = await hits(client)
            reply = await denied(client, "counter__hit")
            assert reply["reason"] == "policy_denied"
            assert reply["policies"] == ["no_permit"]
            assert reply["engine"] == engine
            assert reply["policy_version"].startswith(("sha256:", "git:"))
            assert await hits(client) == before, "a denied call reached the upstream"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_engineer_may_change_things_but_destructive_tools_need_approval(
    tmp_path: Path, engine: str, mode: str
) -> None:
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        policy=policy_section(engine, repo_policies(tmp_path)),
        identity=principal("engineer"),
        approvals={"enabled": False},  # the decision itself; waiting for approvers: test_approvals.py
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode=mode) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            assert names == ["counter__count", "counter__hit", "counter__hit_destructive", "counter__reset"]
            before = await hits(client)
            await client.call_tool("counter__hit", {})
            assert await hits(client) == before + 1
            reply = await denied(client, "counter__hit_destructive")
            assert reply["reason"] == "approval_required"
            assert reply["policies"] == ["destructive-needs-approval"]
            assert "destructive tools need a human approval" in reply["message"]
            assert "no approval channel configured" in reply["message"]
            assert await hits(client) == before + 1, "a call needing approval reached the upstream"


WORKSPACE_CEDAR = """
@id("everything") permit (principal, action, resource);

@id("workspace-only")
@reason("file tools may only touch the workspace")
forbid (principal, action == Mcp::Action::"call_tool", resource)
when {
  context.arguments.hasTag("path") &&
  context.arguments.getTag("path") has text &&
  !(context.arguments.getTag("path").text like "WORKSPACE/*")
};
"""

WORKSPACE_REGO = """
package mcp.authz

default decision := {"effect": "deny", "reasons": [{"id": "no_permit"}]}

decision := {"effect": "deny", "reasons": [{
	"id": "workspace-only",
	"message": "file tools may only touch the workspace",
}]} if {
	input.action == "call_tool"
	path := input.context.arguments.path
	not startswith(path, "WORKSPACE/")
} else := {"effect": "allow", "reasons": [{"id": "everything"}]}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "ws").mkdir(parents=True)
    (root / "ws" / "notes.txt").write_text("inside")
    (root / "secret.txt").write_text("outside")
    return root


@pytest.mark.anyio
@pytest.mark.parametrize(
    "attempt",
    [
        "{ws}/../secret.txt",
        "{ws}/./../secret.txt",
        "{ws}//..//secret.txt",
        "file://{ws}/%2e%2e/secret.txt",
    ],
)
async def test_path_traversal_is_judged_on_the_canonical_path(
    tmp_path: Path, workspace: Path, engine: str, attempt: str
) -> None:
    ws = str(workspace / "ws")
    policies = tmp_path / "policies"
    (policies / "cedar").mkdir(parents=True)
    (policies / "rego").mkdir()
    (policies / "cedar" / "ws.cedar").write_text(WORKSPACE_CEDAR.replace("WORKSPACE", ws))
    (policies / "rego" / "ws.rego").write_text(WORKSPACE_REGO.replace("WORKSPACE", ws))
    # The filesystem server may read the whole folder: only the policy keeps calls in ws/.
    fs = command_upstream(NODE22, SERVER_FILESYSTEM_JS, str(workspace))
    config = broker_config({"fs": fs}, policy=policy_section(engine, policies))
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            inside = await client.call_tool("fs__read_text_file", {"path": f"{ws}/notes.txt"})
            assert text_of(inside) == "inside"
            reply = await denied(client, "fs__read_text_file", {"path": attempt.format(ws=ws)})
            assert reply["policies"] == ["workspace-only"]


@pytest.mark.anyio
async def test_an_invalid_policy_reload_keeps_the_old_set_and_a_valid_one_applies_in_the_same_session(
    tmp_path: Path, engine: str
) -> None:
    policies = repo_policies(tmp_path)
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        policy={**policy_section(engine, policies), "watch": True, "watch_interval": 0.2},
        identity=principal("engineer"),
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            await client.call_tool("counter__hit", {})
            version = status(broker.base_url)["policy_version"]
            if engine == "cedar":
                broken = policies / "cedar" / "broken.cedar"
                broken.write_text(
                    '@id("typo")\nforbid (principal, action, resource) when { resource.nope };\n'
                )
            else:
                broken = policies / "rego" / "broken.rego"
                broken.write_text("package mcp.authz\n\ndeny contains x if {\n")
            last = wait_for_reload(broker.base_url, lambda s: s["last_reload"] and not s["last_reload"]["ok"])
            assert "broken." in last["last_reload"]["message"]
            assert last["policy_version"] == version
            await client.call_tool("counter__hit", {})  # still the old set: allowed

            broken.unlink()
            if engine == "cedar":
                (policies / "cedar" / "freeze.cedar").write_text(
                    '@id("freeze") @reason("change freeze")\n'
                    'forbid (principal in Mcp::Role::"engineer",\n'
                    '        action == Mcp::Action::"call_tool", resource)\n'
                    "when { !resource.readOnlyHint };\n"
                )
            else:
                rego = policies / "rego" / "mcp" / "authz" / "authz.rego"
                rego.write_text(
                    rego.read_text().replace(
                        'deny contains {"id": "uninterpretable-arguments"',
                        'deny contains {"id": "freeze", "message": "change freeze"} if {\n'
                        '\tinput.action == "call_tool"\n\tnot input.resource.annotations.readOnlyHint\n}\n\n'
                        'deny contains {"id": "uninterpretable-arguments"',
                    )
                )
            wait_for_reload(
                broker.base_url, lambda s: s["policy_version"] != version and s["last_reload"]["ok"]
            )
            reply = await denied(client, "counter__hit")  # same session, new decision
            assert reply["policies"] == ["freeze"]


def status(base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base_url}/readyz", timeout=5).json()
    policy: dict[str, Any] = body["policy"]
    return policy


def wait_for_reload(base_url: str, done: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status(base_url)
        if done(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"the policy did not reload as expected: {status(base_url)}")


@pytest.mark.anyio
async def test_opa_killed_mid_run_denies_with_policy_error_then_recovers(tmp_path: Path) -> None:
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        policy=policy_section("opa", repo_policies(tmp_path)),
        identity=principal("engineer"),
    )
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            before = await hits(client)
            opa = opa_processes(broker.children())
            assert len(opa) == 1, broker.children()
            os.kill(opa[0], signal.SIGKILL)
            reply = await denied(client, "counter__hit")
            assert reply["reason"] == "policy_error"
            assert "denied" in reply["message"]
            deadline = time.monotonic() + 15
            reasons: set[str] = set()
            while time.monotonic() < deadline:
                try:
                    await client.call_tool("counter__hit", {})
                    break
                except MCPError as exc:
                    reasons.add(exc.error.data["reason"] if isinstance(exc.error.data, dict) else "?")
                    await anyio.sleep(0.1)
            else:
                raise AssertionError("decisions did not recover after OPA was restarted")
            assert reasons <= {"policy_error"}, reasons
            assert await hits(client) == before + 1, "only the call made after recovery reached the upstream"


def opa_processes(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "opa":
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.anyio
async def test_sighup_and_the_admin_endpoint_reload_the_policy(tmp_path: Path) -> None:
    policies = repo_policies(tmp_path)
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        policy=policy_section("cedar", policies),  # watch off: only explicit reloads
        identity=principal("engineer"),
    )
    with running_broker(tmp_path, config) as broker:
        version = status(broker.base_url)["policy_version"]
        (policies / "cedar" / "freeze.cedar").write_text(
            '@id("freeze") forbid (principal, action == Mcp::Action::"call_tool", resource);\n'
        )
        os.kill(broker.pid, signal.SIGHUP)
        state = wait_for_reload(broker.base_url, lambda s: s["policy_version"] != version)
        assert state["last_reload"]["ok"]
        async with Client(broker.url, mode="legacy") as client:
            assert (await denied(client, "counter__count"))["policies"] == ["freeze"]

        (policies / "cedar" / "freeze.cedar").write_text('@id("freeze") forbid (principal, action, resource')
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(f"{broker.base_url}/admin/policy/reload")
            assert refused.status_code == 422
            assert "freeze.cedar:1: syntax error" in refused.json()["message"]
            (policies / "cedar" / "freeze.cedar").unlink()
            accepted = await http.post(f"{broker.base_url}/admin/policy/reload")
            assert accepted.status_code == 200
            assert accepted.json()["policy_version"] == version  # back to the original files
