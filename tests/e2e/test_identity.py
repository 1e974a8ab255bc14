"""End to end: who the caller is, from a real token, decides what the policy allows.

A real broker process with token authentication (a JWKS on 127.0.0.1 with keys made here,
plus one static API key) fronts the counter fixture. Small test policies — the same rules in
Cedar and in Rego — depend on the principal's roles, tenant and delegation:

- `counter__count`: anyone;
- `counter__hit`: role `engineer` in tenant `acme`;
- `counter__hit_destructive`: an Agent acting for alice (`principal.acting_for`);
- `counter__reset`: nobody.

Tokens reach the broker through the official SDK client (an `Authorization` header on its
httpx2 client, both protocol eras), through the MCP Inspector CLI (`--header`), and through
the stdio front (`identity.stdio_token_env`).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.fixtures import REPO_ROOT
from tests.support.broker import (
    INSPECTOR_JS,
    NODE22,
    BrokerProcess,
    broker_config,
    broker_env,
    running_broker,
    stdio_upstream,
    write_config,
)
from tests.support.opa import opa_binary
from tests.support.tokens import JwksServer, Minter, SigningKey, bearer_client, free_port, jwt_issuer

ISSUER = "https://idp.test"
ENGINES = ["cedar", "opa"]
STDIO_RESOURCE = "https://broker.test/mcp"  # the audience of the stdio caller's token
TOOLS = ["counter__count", "counter__hit", "counter__hit_destructive", "counter__reset"]

CEDAR = """
@id("lists") @reason("lists are visible; each item only if its use would be allowed")
permit (
  principal,
  action in [Mcp::Action::"list_tools", Mcp::Action::"list_resources", Mcp::Action::"list_prompts"],
  resource
);

@id("anyone-counts") @reason("anyone may read the count")
permit (principal, action == Mcp::Action::"call_tool", resource)
when { resource.name == "count" };

@id("acme-engineers-hit") @reason("engineers of acme may hit")
permit (principal in Mcp::Role::"engineer", action == Mcp::Action::"call_tool", resource)
when { resource.name == "hit" && principal in Mcp::Tenant::"acme" };

@id("agents-for-alice-destroy") @reason("an agent acting for alice may use the destructive tool")
permit (principal is Mcp::Agent, action == Mcp::Action::"call_tool", resource)
when {
  resource.name == "hit_destructive" &&
  principal has acting_for && principal.acting_for == Mcp::User::"alice"
};
"""

REGO = """
package mcp.authz

default decision := {
    "effect": "deny",
    "reasons": [{"id": "no_permit", "message": "no policy permits this request"}],
}

decision := {
    "effect": "allow",
    "reasons": [{"id": id, "message": "permitted"} | some id in sort(permit)],
} if {
    count(permit) > 0
}

permit contains "lists" if input.action in {"list_tools", "list_resources", "list_prompts"}

permit contains "anyone-counts" if {
    input.action == "call_tool"
    input.resource.name == "count"
}

permit contains "acme-engineers-hit" if {
    input.action == "call_tool"
    input.resource.name == "hit"
    "engineer" in input.principal.roles
    input.principal.tenant == "acme"
}

permit contains "agents-for-alice-destroy" if {
    input.action == "call_tool"
    input.resource.name == "hit_destructive"
    input.principal.type == "Agent"
    input.principal.acting_for == "alice"
}
"""


def write_policies(directory: Path) -> Path:
    root = directory / "policies"
    (root / "cedar").mkdir(parents=True)
    (root / "cedar" / "identity.cedar").write_text(CEDAR)
    (root / "rego").mkdir(parents=True)
    (root / "rego" / "identity.rego").write_text(REGO)
    return root


def policy_section(engine: str, directory: Path) -> dict[str, Any]:
    section: dict[str, Any] = {"engine": engine, "path": str(write_policies(directory)), "watch": False}
    if engine == "opa":
        section["opa"] = {"binary": str(opa_binary()), "timeout_ms": 1000}
    return section


@dataclass
class Deployment:
    engine: str
    broker: BrokerProcess
    minter: Minter
    api_key: str


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.rsa("e2e-rsa")


@pytest.fixture(scope="module")
def jwks(key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([key]) as server:
        yield server


def authentication(jwks: JwksServer, api_key: str, **extra: Any) -> dict[str, Any]:
    robot = {"type": "Agent", "id": "deploy-robot", "tenant": "acme", "roles": ["engineer"]}
    return {
        "jwt": [jwt_issuer(ISSUER, jwks_url=jwks.url)],
        "api_keys": [{"sha256": api_key_digest(api_key), "principal": robot}],
        **extra,
    }


@pytest.fixture(scope="module", params=ENGINES)
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    key: SigningKey,
    jwks: JwksServer,
) -> Iterator[Deployment]:
    engine = str(request.param)
    directory = tmp_path_factory.mktemp(f"identity-{engine}")
    api_key = "mcpk_" + secrets.token_urlsafe(32)
    config = broker_config(
        {"counter": stdio_upstream("counter.py")},
        http={"port": free_port()},
        policy=policy_section(engine, directory),
        identity={"authentication": authentication(jwks, api_key)},
    )
    with running_broker(directory, config) as broker:
        yield Deployment(engine, broker, Minter(ISSUER, broker.url, key=key), api_key)


# -- who is who ---------------------------------------------------------------------------------------


def tokens(minter: Minter) -> dict[str, str]:
    return {
        "alice": minter.token("alice", roles=["engineer"], tenant="acme"),
        "bob": minter.token("bob", roles="engineer", tenant="globex"),
        "carol": minter.token("carol", roles="viewer auditor", tenant="acme"),
        "bot-for-alice": minter.token("alice", act={"sub": "review-bot"}, tenant="acme"),
        "app-for-bob": minter.token("bob", azp="desktop-app", tenant="acme", roles=["engineer"]),
    }


ALLOWED = {
    "alice": ["counter__count", "counter__hit"],
    "bob": ["counter__count"],
    "carol": ["counter__count"],
    "bot-for-alice": ["counter__count", "counter__hit_destructive"],
    # an agent acting for bob: an acme engineer may hit, but it does not act for alice
    "app-for-bob": ["counter__count", "counter__hit"],
    "api-key": ["counter__count", "counter__hit"],
}


def mcp_error(exc: BaseException) -> types.ErrorData:
    """The MCPError inside what the SDK client raised (it may come wrapped in an exception group)."""
    found = [exc]
    while found:
        current = found.pop()
        if isinstance(current, MCPError):
            return current.error
        if isinstance(current, BaseExceptionGroup):
            found.extend(current.exceptions)
    raise AssertionError(f"no MCPError in {exc!r}")


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def hits(client: Client) -> int:
    return int(text_of(await client.call_tool("counter__count", {})))


async def check_permissions(client: Client, who: str, engine: str) -> None:
    """The tools `who` sees are exactly those it may call; each call does what the policy says."""
    listed = sorted(t.name for t in (await client.list_tools()).tools)
    assert listed == ALLOWED[who], f"{who} sees {listed}"
    for tool in TOOLS[1:]:
        before = await hits(client)
        if tool in ALLOWED[who]:
            result = await client.call_tool(tool, {})
            assert result.is_error is not True, (who, tool, result)
            assert await hits(client) == before + 1, f"{who}: {tool} did not reach the upstream"
            continue
        with pytest.raises(MCPError) as caught:
            await client.call_tool(tool, {})
        error = caught.value.error
        assert error.code == -32001, (who, tool, error)
        data = error.data if isinstance(error.data, dict) else {}
        assert (data.get("reason"), data.get("policies"), data.get("engine")) == (
            "policy_denied",
            ["no_permit"],
            engine,
        ), (who, tool, error)
        assert await hits(client) == before, f"{who}: the denied {tool} reached the upstream"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_roles_tenant_and_delegation_reach_the_policy(deployment: Deployment, mode: str) -> None:
    for who, token in tokens(deployment.minter).items():
        async with bearer_client(deployment.broker.url, token, mode=mode) as client:
            await check_permissions(client, who, deployment.engine)


@pytest.mark.anyio
async def test_api_key_authentication(deployment: Deployment) -> None:
    async with bearer_client(deployment.broker.url, deployment.api_key, mode="legacy") as client:
        await check_permissions(client, "api-key", deployment.engine)
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - an MCPError inside exception groups
        async with bearer_client(deployment.broker.url, "mcpk_wrong-key", mode="legacy") as client:
            await client.list_tools()
    # the broker also trusts an issuer, so an unknown key is then tried as a JWT
    assert mcp_error(caught.value).message == "Unauthorized: the token is not a well-formed JWT"


@pytest.mark.anyio
async def test_without_a_token_the_sdk_client_cannot_connect(deployment: Deployment) -> None:
    for mode in ("legacy", "auto"):
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - an MCPError inside exception groups
            async with bearer_client(deployment.broker.url, None, mode=mode) as client:
                await client.list_tools()
        error = mcp_error(caught.value)
        assert (error.code, error.message) == (-32001, "Unauthorized: a bearer token is required")
    assert "Traceback" not in deployment.broker.log()


# -- the MCP Inspector CLI -------------------------------------------------------------------------------

EXIT_TOOL_IS_ERROR = 5
needs_node = pytest.mark.fail_if_missing(
    not (NODE22.exists() and INSPECTOR_JS.exists()),
    reason="Node tools missing: run scripts/install-node-tools.sh",
)


def inspector(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`node inspector --cli URL ARGS…` as in tests/e2e/test_inspector.py (HOME in a temp dir)."""
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        [str(NODE22), str(INSPECTOR_JS), "--cli", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@needs_node
@pytest.mark.parametrize("deployment", ["cedar"], indirect=True)
def test_inspector_cli_with_a_bearer_header(deployment: Deployment, tmp_path: Path) -> None:
    url = deployment.broker.url
    who = tokens(deployment.minter)

    def run(token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        header = ["--header", f"Authorization: Bearer {token}"] if token is not None else []
        return inspector(tmp_path, url, *header, *args)

    listed = run(who["bot-for-alice"], "--method", "tools/list")
    assert listed.returncode == 0, listed
    assert sorted(t["name"] for t in json.loads(listed.stdout)["tools"]) == ALLOWED["bot-for-alice"]

    allowed = run(who["alice"], "--method", "tools/call", "--tool-name", "counter__hit")
    assert allowed.returncode == 0, allowed
    assert json.loads(allowed.stdout).get("isError") is not True, allowed

    # bob may not hit: the policy hides the tool from him, so the Inspector does not even find it
    denied = run(who["bob"], "--method", "tools/call", "--tool-name", "counter__hit")
    assert denied.returncode == EXIT_TOOL_IS_ERROR, denied
    assert "Tool 'counter__hit' not found on server" in denied.stderr, denied

    # no header: the 401 sends the Inspector into its OAuth flow (which needs a TTY here)
    anonymous = run(None, "--method", "tools/list")
    assert anonymous.returncode != 0, anonymous
    assert json.loads(anonymous.stderr)["error"]["code"] == "auth_required", anonymous


# -- the stdio front: identity.stdio_token_env ----------------------------------------------------------


def stdio_config(directory: Path, jwks: JwksServer, *, upstream: bool = True, **auth: Any) -> Path:
    counter = stdio_upstream("counter.py")
    config = broker_config(
        {"counter": counter if upstream else {**counter, "enabled": False}},
        policy=policy_section("cedar", directory),
        identity={
            "authentication": authentication(
                jwks, "mcpk_unused-" + secrets.token_hex(8), resource=STDIO_RESOURCE, **auth
            ),
            "stdio_token_env": "MCP_BROKER_TOKEN",
        },
    )
    return write_config(directory, config)


def stdio_params(config: Path, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "broker.cli", "stdio", "-c", str(config)],
        env=broker_env({"MCP_BROKER_TOKEN": token}),
        cwd=str(REPO_ROOT),
    )


@pytest.mark.anyio
async def test_stdio_front_with_a_valid_token(tmp_path: Path, jwks: JwksServer, key: SigningKey) -> None:
    config = stdio_config(tmp_path, jwks)
    token = Minter(ISSUER, STDIO_RESOURCE, key=key).token("alice", act={"sub": "review-bot"}, tenant="acme")
    async with Client(stdio_params(config, token), mode="legacy") as client:
        await check_permissions(client, "bot-for-alice", "cedar")


class StdioBroker:
    """`mcp-broker stdio` driven line by line, to see the answer to each request."""

    def __init__(self, config: Path, token: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "stdio", "-c", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=broker_env({"MCP_BROKER_TOKEN": token}),
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def ask(
        self, request_id: int, method: str, params: dict[str, Any], timeout: float = 30.0
    ) -> dict[str, Any]:
        assert self.process.stdin is not None
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer: dict[str, Any] = json.loads(
                    self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
                )
            except queue.Empty:
                raise TimeoutError(f"no answer to {method} (id {request_id}) within {timeout}s") from None
            if answer.get("id") == request_id:
                return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"},
}


def test_stdio_front_with_an_invalid_token_refuses_every_request(
    tmp_path: Path, jwks: JwksServer, key: SigningKey
) -> None:
    config = stdio_config(tmp_path, jwks, upstream=False)
    expired = Minter(ISSUER, STDIO_RESOURCE, key=key).token("alice", exp=int(time.time()) - 600)
    broker = StdioBroker(config, expired)
    try:
        requests: list[tuple[str, dict[str, Any]]] = [
            ("initialize", INITIALIZE),
            ("tools/list", {}),
            ("tools/call", {"name": "counter__hit"}),
            ("ping", {}),
        ]
        for request_id, (method, params) in enumerate(requests, start=1):
            answer = broker.ask(request_id, method, params)
            expected = {
                "code": -32001,
                "message": "Unauthorized: the token has expired",
                "data": {"reason": "unauthenticated"},
            }
            assert answer["error"] == expected, answer
        assert broker.process.poll() is None, "the broker keeps serving (and refusing)"
    finally:
        broker.close()


@pytest.mark.anyio
async def test_stdio_front_sdk_client_sees_the_unauthorized_error(
    tmp_path: Path, jwks: JwksServer, key: SigningKey
) -> None:
    config = stdio_config(tmp_path, jwks, upstream=False)
    forged = Minter(ISSUER, STDIO_RESOURCE, key=SigningKey.ec("forger")).token("admin")
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - an MCPError, maybe in a group
        async with Client(stdio_params(config, forged), mode="legacy") as client:
            await client.list_tools()
    error = mcp_error(caught.value)
    assert error.code == -32001
    assert error.message == (
        "Unauthorized: no key of the issuer can verify this token (unknown key id or algorithm)"
    )


def test_stdio_front_answers_a_token_without_the_required_scope(
    tmp_path: Path, jwks: JwksServer, key: SigningKey
) -> None:
    config = stdio_config(tmp_path, jwks, upstream=False, required_scopes=["mcp"])
    token = Minter(ISSUER, STDIO_RESOURCE, key=key).token("alice", scope="tools.read")
    broker = StdioBroker(config, token)
    try:
        answer = broker.ask(1, "initialize", INITIALIZE, timeout=3.0)
        assert answer["error"]["code"] == -32001
        assert "the token lacks the scope(s) mcp" in answer["error"]["message"]
        assert answer["error"]["data"] == {"reason": "insufficient_scope", "required_scope": "mcp"}
    finally:
        broker.close()
