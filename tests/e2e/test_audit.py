"""End to end: the broker's audit trail — one record per decided request, nothing edited unseen.

A real broker writing a real trail (fsync durability, signed checkpoints), callers through the
official SDK client and raw HTTP, the trail read back with `mcp-broker audit verify|query`, a
kill -9 in the middle of a load, and a disk that refuses writes (a real file-size limit set
on the running broker with prlimit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.support.broker import (
    BrokerProcess,
    broker_config,
    broker_env,
    running_broker,
    stdio_upstream,
    write_config,
)
from tests.support.tokens import bearer_client

POLICIES = Path(__file__).resolve().parents[1] / "support" / "policies" / "approvals"
NOTES = Path(__file__).resolve().parents[2] / "examples" / "notes_server.py"
PEOPLE = {"alice": ["engineer"], "bob": ["approver"]}
KEYS = {name: f"mcpb_{name}-audit-key-0123456789" for name in PEOPLE}
FAKE_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.c2lnbmF0dXJlLW5vdC1yZWFsLTEyMzQ1Njc4"
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        capture_output=True,
        text=True,
        env=broker_env(env),
        timeout=60,
        check=False,
    )


def audit_config(directory: Path, **audit: Any) -> dict[str, Any]:
    keys = [
        {"sha256": api_key_digest(KEYS[name]), "principal": {"type": "User", "id": name, "roles": roles}}
        for name, roles in PEOPLE.items()
    ]
    return broker_config(
        {"counter": stdio_upstream("counter"), "notes": stdio_upstream(NOTES)},
        policy={"path": str(POLICIES), "watch": False},
        identity={"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}},
        approvals={"path": str(directory / "approvals.db"), "timeout": 30},
        audit={"directory": str(directory / "audit"), **audit},
    )


def records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((directory / "audit").glob("audit-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("keys") / "audit-signing"
    made = cli("audit", "keygen", "--out", str(prefix))
    assert made.returncode == 0, made.stderr
    return prefix


async def wait_pending(broker: BrokerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(200):
            reply = await http.get(
                broker.base_url + "/approvals", headers={"authorization": f"Bearer {KEYS['bob']}"}
            )
            if reply.json()["approvals"]:
                found: dict[str, Any] = reply.json()["approvals"][0]
                return found
            await asyncio.sleep(0.05)
    raise AssertionError("no pending approval")


@pytest.mark.anyio
async def test_every_decided_request_has_a_verifiable_redacted_record(
    tmp_path: Path, signing_key: Path
) -> None:
    config = audit_config(tmp_path, signing_key=f"{signing_key}.pem", checkpoint_records=5)
    with running_broker(tmp_path, config) as broker:
        async with bearer_client(broker.url, KEYS["alice"], mode="legacy") as alice:
            await alice.list_tools()
            await alice.call_tool("counter__hit", {})
            await alice.call_tool("notes__write_note", {"note_id": "creds", "text": f"token {FAKE_JWT}"})
            waiting = asyncio.create_task(alice.call_tool("counter__hit_destructive", {}))
            approval = await wait_pending(broker)
            async with httpx.AsyncClient(timeout=10) as http:
                await http.post(
                    f"{broker.base_url}/approvals/{approval['id']}/deny",
                    headers={"authorization": f"Bearer {KEYS['bob']}"},
                    json={"note": "not now"},
                )
            with pytest.raises(MCPError):
                await asyncio.wait_for(waiting, 15)
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(broker.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401
    trail = records(tmp_path)
    raw = "\n".join(p.read_text() for p in (tmp_path / "audit").glob("audit-*.jsonl"))
    assert FAKE_JWT not in raw, "a token reached the audit trail"

    requests = [r for r in trail if r["kind"] == "request"]
    by_method = {(r["method"], (r.get("target") or {}).get("id")): r for r in requests}
    listed = by_method[("tools/list", None)]
    assert listed["principal"]["id"] == "alice" and listed["listing"]["visible"] == 4 + 6
    hit = by_method[("tools/call", "counter__hit")]
    assert hit["decision"]["effect"] == "allow" and hit["outcome"]["status"] == "ok"
    assert hit["decision"]["policy_version"] and hit["outcome"]["latency_ms"] is not None
    note = by_method[("tools/call", "notes__write_note")]
    assert "REDACTED" in json.dumps(note["arguments"])
    gated = by_method[("tools/call", "counter__hit_destructive")]
    assert gated["decision"]["effect"] == "require_approval"
    assert gated["outcome"]["status"] == "not_forwarded"
    assert gated["outcome"]["error"]["reason"] == "approval_denied"
    assert gated["approval"]["id"] == approval["id"]

    events = [(r["event"], r["approval"]["id"]) for r in trail if r["kind"] == "approval"]
    assert events == [("requested", approval["id"]), ("denied", approval["id"])]
    denied = next(r for r in trail if r["kind"] == "approval" and r["event"] == "denied")
    assert denied["approval"]["approver"]["id"] == "bob" and denied["approval"]["note"] == "not now"
    assert [r["reason"] for r in trail if r["kind"] == "auth_failure"] == ["unauthenticated"]
    assert [r["trigger"] for r in trail if r["kind"] == "policy_reload"] == ["startup"]

    verified = cli("audit", "verify", str(tmp_path / "audit"), "--public-key", f"{signing_key}.pub.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    queried = cli(
        "audit",
        "query",
        str(tmp_path / "audit"),
        "--principal",
        "alice",
        "--effect",
        "allow",
        "--format",
        "json",
    )
    assert queried.returncode == 0, queried.stderr
    shown = [json.loads(line) for line in queried.stdout.splitlines() if line.strip()]
    assert {(r.get("target") or {}).get("id") for r in shown if r["kind"] == "request"} >= {
        "counter__hit",
        "notes__write_note",
    }


def test_an_edited_record_is_found_by_verify(tmp_path: Path, signing_key: Path) -> None:
    config = audit_config(tmp_path, signing_key=f"{signing_key}.pem")

    async def calls(url: str) -> None:
        async with bearer_client(url, KEYS["alice"], mode="legacy") as alice:
            for _ in range(3):
                await alice.call_tool("counter__hit", {})

    with running_broker(tmp_path, config) as broker:
        asyncio.run(calls(broker.url))
    (live,) = [p for p in (tmp_path / "audit").glob("audit-*.jsonl")][-1:]
    lines = live.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"counter__hit"' in line and '"allow"' in line)
    lines[index] = lines[index].replace('"allow"', '"deny"', 1)
    live.write_text("\n".join(lines) + "\n")
    verified = cli("audit", "verify", str(tmp_path / "audit"), "--public-key", f"{signing_key}.pub.pem")
    assert verified.returncode == 1
    assert f"{live.name}:{index + 1}" in verified.stdout + verified.stderr


def child_pids(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(child) for task in tasks for child in (task / "children").read_text().split()]


def stateless_hit(http: httpx.Client, url: str, request_id: str) -> bool:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "counter__hit", "arguments": {}, "_meta": meta},
    }
    headers = {
        "Authorization": f"Bearer {KEYS['alice']}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "counter__hit",
    }
    try:
        reply = http.post(url, json=body, headers=headers)
        return "result" in reply.json()
    except (httpx.HTTPError, ValueError):
        return False


def test_a_kill_9_under_load_leaves_a_trail_with_every_answered_call(tmp_path: Path) -> None:
    """Each response a client received has its record in the trail, and the trail verifies."""
    path = write_config(tmp_path, audit_config(tmp_path))
    ready = tmp_path / "broker.url"
    log = (tmp_path / "broker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "-c", str(path), "--ready-file", str(ready)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=broker_env({"XDG_STATE_HOME": str(tmp_path / "state")}),
    )
    try:
        for _ in range(600):
            if ready.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        url = ready.read_text().strip()
        answered: list[str] = []
        children: list[int] = []

        async def load() -> None:
            async def worker(n: int) -> None:
                with httpx.Client(timeout=10) as http:
                    for i in range(150):  # bounded: at most 600 calls in all
                        request_id = f"w{n}-{i}"
                        if not await asyncio.to_thread(stateless_hit, http, url, request_id):
                            return  # the broker is gone
                        answered.append(request_id)

            async def killer() -> None:
                for _ in range(3000):  # at most 30 s
                    if len(answered) >= 120:
                        break
                    await asyncio.sleep(0.01)
                children.extend(await asyncio.to_thread(child_pids, process.pid))
                os.kill(process.pid, signal.SIGKILL)

            await asyncio.gather(*(worker(n) for n in range(4)), killer())

        asyncio.run(load())
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        for child in children:  # its stdio upstreams (each in its own process group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
    assert len(answered) >= 120, len(answered)
    verified = cli("audit", "verify", str(tmp_path / "audit"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    recorded = {r.get("request_id") for r in records(tmp_path) if r["kind"] == "request"}
    missing = [rid for rid in answered if rid not in recorded]
    assert not missing, f"{len(missing)} answered calls have no record: {missing[:5]}"


@pytest.mark.anyio
async def test_when_the_trail_cannot_be_written_nothing_is_forwarded(tmp_path: Path) -> None:
    config = audit_config(tmp_path, retry_interval=0.2)
    with running_broker(tmp_path, config) as broker:
        async with bearer_client(broker.url, KEYS["alice"], mode="legacy") as alice:
            await alice.call_tool("counter__hit", {})
            count = int(text(await alice.call_tool("counter__count", {})))
            written = sum(p.stat().st_size for p in (tmp_path / "audit").glob("audit-*.jsonl"))
            limit = await asyncio.to_thread(prlimit, broker.pid, str(written))
            assert limit.returncode == 0
            with pytest.raises(MCPError) as first:
                await alice.call_tool("counter__hit", {})
            assert first.value.error.data["reason"] == "audit_unavailable"
            with pytest.raises(MCPError) as second:
                await alice.call_tool("counter__hit", {})
            assert second.value.error.data["reason"] == "audit_unavailable"
            async with httpx.AsyncClient(timeout=10) as http:
                ready = (await http.get(broker.base_url + "/readyz")).json()
            assert ready["ready"] is False and ready["audit"]["state"] == "failed"
            assert (await asyncio.to_thread(prlimit, broker.pid, "unlimited")).returncode == 0
            await asyncio.sleep(0.3)
            after = int(text(await alice.call_tool("counter__count", {})))
            assert after <= count + 1, "calls were forwarded while the trail could not be written"
    verified = cli("audit", "verify", str(tmp_path / "audit"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def prlimit(pid: int, size: str) -> subprocess.CompletedProcess[bytes]:
    """Set the running broker's file-size limit: writes past it fail (EFBIG; Python ignores SIGXFSZ)."""
    return subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={size}:"], check=False)  # soft limit only


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text
