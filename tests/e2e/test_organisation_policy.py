"""End to end: the organisation policy (policies/, both engines) in front of the organisation's upstreams.

The upstreams are the entries of examples/organisation.yaml that are cheap to start — notes and
globex-notes, payments, git (in a temporary repository), fs (Node 22, a temporary directory) —
taken from that file with only machine-specific paths replaced, tenants included. The policies
are the repository's own directory, unmodified. One broker per engine serves alice, an engineer
of tenant acme; the SDK client talks to it:

* a tenant neither sees nor uses another tenant's server;
* an engineer's refund over the limit is held for approval and never reaches the ledger; under
  the limit it is carried out (the ledger lists the refund afterwards);
* a path traversal on the filesystem server is judged on the canonical path and denied.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.support.broker import NODE22, SERVER_FILESYSTEM_JS, broker_config, running_broker
from tests.support.opa import opa_binary

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ORGANISATION = yaml.safe_load((EXAMPLES / "organisation.yaml").read_text(encoding="utf-8"))
UPSTREAMS = ("notes", "globex-notes", "payments", "git", "fs")
ALICE = {"type": "User", "id": "alice", "tenant": "acme", "roles": ["engineer"]}
FIONA = {"type": "User", "id": "fiona", "tenant": "acme", "roles": ["finance"]}  # the approvals API's user

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.fail_if_missing(
        not (NODE22.exists() and SERVER_FILESYSTEM_JS.exists()),
        reason="Node tools missing: run scripts/install-node-tools.sh",
    ),
]


@dataclass
class Organisation:
    engine: str
    url: str
    repository: Path

    @property
    def base_url(self) -> str:
        return self.url.rsplit("/", 1)[0]


def organisation_upstream(name: str, machine: dict[str, str]) -> dict[str, Any]:
    """examples/organisation.yaml's entry for `name`, runnable here: this interpreter, absolute
    paths, `machine` replacing the machine-specific arguments (/workspace)."""
    upstream = dict(ORGANISATION["upstreams"][name])
    if upstream["command"] == "python":
        upstream["command"] = sys.executable
    elif upstream["command"].startswith("."):
        upstream["command"] = str((EXAMPLES / upstream["command"]).resolve())
    upstream["args"] = [
        machine.get(arg, str((EXAMPLES / arg).resolve()) if arg.startswith("../") else arg)
        for arg in upstream.get("args", [])
    ]
    if upstream.get("cwd"):
        upstream["cwd"] = str((EXAMPLES / upstream["cwd"]).resolve())
    return upstream


@pytest.fixture(scope="module", params=["cedar", "opa"])
def organisation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Organisation]:
    engine = str(request.param)
    root = tmp_path_factory.mktemp(f"organisation-{engine}")
    workspace = root / "workspace"
    repository = workspace / "app"
    repository.mkdir(parents=True)
    git = ["git", "-C", str(repository), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    machine = {"/workspace": str(workspace), "/workspace/app": str(repository)}
    policy: dict[str, Any] = {"engine": engine, "path": str(REPO / "policies"), "watch": False}
    if engine == "opa":
        policy["opa"] = {"binary": str(opa_binary()), "timeout_ms": 500}
    config = broker_config(
        {name: organisation_upstream(name, machine) for name in UPSTREAMS},
        policy=policy,
        identity={"default_principal": ALICE},
        approvals={"local_approver": FIONA, "timeout": 60, "path": str(root / "approvals.db")},
    )
    with running_broker(root, config) as broker:
        yield Organisation(engine, broker.url, repository)


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(MCPError) as caught:
        await client.call_tool(tool, arguments)
    error = caught.value.error
    assert error.code == -32001, error
    data = error.data if isinstance(error.data, dict) else {}
    return {"message": error.message, **data}


async def pending_approval(organisation: Organisation, target: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=15) as http:
        for _ in range(200):
            listed = await http.get(f"{organisation.base_url}/approvals?status=pending")
            assert listed.status_code == 200, listed.text
            found = [a for a in listed.json()["approvals"] if a["target"] == target]
            if found:
                return found[0]
            await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {target}")


async def transactions(client: Client, order_id: str) -> list[dict[str, Any]]:
    result = await client.call_tool("payments__list_transactions", {"order_id": order_id})
    assert not result.is_error, text_of(result)
    found: list[dict[str, Any]] = json.loads(text_of(result))
    return found


async def test_a_tenant_neither_sees_nor_uses_another_tenants_server(organisation: Organisation) -> None:
    async with Client(organisation.url, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"notes__read_note", "payments__refund", "git__git_status", "fs__read_text_file"} <= names
        assert not {n for n in names if n.startswith("globex-notes__")}, names
        assert {p.name for p in (await client.list_prompts()).prompts} == {"notes__summarize_note"}

        note = await client.call_tool("notes__read_note", {"note_id": "groceries"})
        assert text_of(note).startswith("Groceries")
        denied = await refused(client, "globex-notes__read_note", {"note_id": "groceries"})
        assert denied["reason"] == "policy_denied", denied
        assert denied["policies"] == ["tenant-isolation"]
        assert denied["engine"] == organisation.engine


async def test_a_refund_over_the_limit_waits_for_finance_and_one_under_it_is_made(
    organisation: Organisation,
) -> None:
    async with Client(organisation.url, mode="legacy") as client:
        over = {"order_id": "ord_1002", "amount": 900, "currency": "EUR", "reason": "duplicate"}
        waiting = asyncio.create_task(client.call_tool("payments__refund", over))
        approval = await pending_approval(organisation, "payments__refund")
        assert [r["id"] for r in approval["reasons"]] == ["payments-over-limit"]
        assert [t["kind"] for t in await transactions(client, "ord_1002")] == ["charge"], (
            "a refund held for approval reached the ledger"
        )
        async with httpx.AsyncClient(timeout=15) as http:
            decided = await http.post(f"{organisation.base_url}/approvals/{approval['id']}/approve", json={})
        assert decided.status_code == 200, decided.text
        assert decided.json()["approver"]["id"] == "fiona"
        refunded = await asyncio.wait_for(waiting, 15)
        assert not refunded.is_error, text_of(refunded)
        assert json.loads(text_of(refunded))["refunded"] == "900.00"

        under = {"order_id": "ord_1002", "amount": 120, "currency": "EUR", "reason": "duplicate"}
        done = await client.call_tool("payments__refund", under)
        assert not done.is_error, text_of(done)
        assert json.loads(text_of(done))["refunded"] == "1020.00"  # the order's refunded total
        ledger = [(t["kind"], t["amount"]) for t in await transactions(client, "ord_1002")]
        assert ledger == [("charge", "1200.00"), ("refund", "900.00"), ("refund", "120.00")]


async def test_a_path_traversal_on_the_filesystem_is_denied(organisation: Organisation) -> None:
    async with Client(organisation.url, mode="legacy") as client:
        for attempt in ("/workspace/../etc/passwd", "file:///workspace/..%2fetc/passwd"):
            denied = await refused(client, "fs__read_text_file", {"path": attempt})
            assert denied["reason"] == "policy_denied", denied
            assert denied["policies"] == ["fs-outside-workspace"]
        allowed = await client.call_tool("fs__list_allowed_directories", {})
        assert not allowed.is_error, text_of(allowed)
        status = await client.call_tool("git__git_status", {"repo_path": str(organisation.repository)})
        assert not status.is_error, text_of(status)
